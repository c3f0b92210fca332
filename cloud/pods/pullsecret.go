package pods

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"outpost.dev/wire"
)

// maxPullAuths is the most registry logins one pull secret may carry to
// an agent (the wire's bound).
const maxPullAuths = 256

// dockerConfigEntry is one login of a Docker config file, as a kubelet's
// credentialprovider reads it: "auth" (base64 of user:password) wins over
// username and password when set.
type dockerConfigEntry struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

// pullAuths fills out's registry logins when s is a pull secret
// (kubernetes.io/dockerconfigjson or the legacy kubernetes.io/dockercfg),
// so the agent, which pulls images itself, needs no Docker config parser.
// A Secret it cannot read gets PullAuthError instead, naming the problem
// without its content; the agent adds it to a failed pull's message.
func pullAuths(s *corev1.Secret, out *wire.Secret) *wire.Secret {
	var key string
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		key = corev1.DockerConfigJsonKey
	case corev1.SecretTypeDockercfg:
		key = corev1.DockerConfigKey
	default:
		return out
	}
	auths, err := parseDockerConfig(s.Type, s.Data[key])
	if err != nil {
		out.PullAuthError = fmt.Sprintf("pull secret %s/%s (%s): key %s: %v", s.Namespace, s.Name, s.Type, key, err)
		return out
	}
	out.PullAuths = auths
	return out
}

// parseDockerConfig reads {"auths": {registry: entry}} (dockerconfigjson)
// or {registry: entry} (dockercfg), registries in sorted order.
func parseDockerConfig(t corev1.SecretType, b []byte) ([]wire.PullAuth, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("missing or empty")
	}
	var entries map[string]dockerConfigEntry
	if t == corev1.SecretTypeDockerConfigJson {
		var cfg struct {
			Auths map[string]dockerConfigEntry `json:"auths"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("not a Docker config.json: %s", jsonProblem(err))
		}
		entries = cfg.Auths
	} else if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("not a .dockercfg: %s", jsonProblem(err))
	}
	regs := make([]string, 0, len(entries))
	for r := range entries {
		regs = append(regs, r)
	}
	sort.Strings(regs)
	if len(regs) > maxPullAuths {
		return nil, fmt.Errorf("%d registries (an edge node takes at most %d)", len(regs), maxPullAuths)
	}
	out := make([]wire.PullAuth, 0, len(regs))
	for _, r := range regs {
		if r == "" {
			continue
		}
		if len(r) > 512 {
			return nil, fmt.Errorf("a registry name of %d bytes (at most 512)", len(r))
		}
		e := entries[r]
		a := wire.PullAuth{Registry: r, Username: e.Username, Password: e.Password}
		if e.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry %q: auth is not base64", r)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("registry %q: auth is not base64 of username:password", r)
			}
			a.Username, a.Password = user, pass
		}
		out = append(out, a)
	}
	return out, nil
}

// jsonProblem describes a JSON error by its kind and offset only: the
// messages of encoding/json quote parts of the input, which is secret.
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("invalid JSON at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("unexpected JSON %s at byte %d (field %q)", e.Value, e.Offset, e.Field)
	}
	return "invalid JSON"
}
