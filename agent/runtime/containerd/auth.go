package containerd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
)

// Credential is one registry login, as a pod's pull secret or the agent's
// configuration gives it.
type Credential struct {
	// Registry says which images the login is for, as a key of a Docker
	// config file: "registry.local:5000", "https://index.docker.io/v1/",
	// "*.example.com" (a glob per host label) or "registry.local/team"
	// (repositories under a path).
	Registry string
	// Username and Password log in (basic, or for a bearer token).
	Username, Password string
}

// matchCredentials returns the credentials whose Registry matches ref,
// most specific key first (the order a kubelet's credential keyring
// uses: keys sorted in reverse), keeping the input order among equal keys.
func matchCredentials(creds []Credential, ref imageRef) []Credential {
	type keyed struct {
		key string
		c   Credential
	}
	var hits []keyed
	for _, c := range creds {
		if key, ok := credentialKey(c.Registry); ok && keyMatches(key, ref) {
			hits = append(hits, keyed{key, c})
		}
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].key > hits[j].key })
	out := make([]Credential, len(hits))
	for i, h := range hits {
		out[i] = h.c
	}
	return out
}

// credentialKey normalises a Docker config key as a kubelet's keyring
// does: no scheme, "/v1/" and "/v2/" mean the host, Docker Hub's names
// mean docker.io.
func credentialKey(k string) (string, bool) {
	if !strings.HasPrefix(k, "https://") && !strings.HasPrefix(k, "http://") {
		k = "https://" + k
	}
	u, err := url.Parse(k)
	if err != nil || u.Host == "" {
		return "", false
	}
	p := u.Path
	if strings.HasPrefix(p, "/v1/") || strings.HasPrefix(p, "/v2/") {
		p = p[3:]
	}
	host := u.Host
	switch host {
	case "index.docker.io", "registry-1.docker.io":
		host = "docker.io"
	}
	if p == "/" {
		p = ""
	}
	return host + p, true
}

// keyMatches reports whether a normalised key matches ref: same port,
// same number of host labels each matching its glob, and the key's path a
// prefix of the repository's.
func keyMatches(key string, ref imageRef) bool {
	kHost, kPath, _ := strings.Cut(key, "/")
	kName, kPort := splitPort(kHost)
	tName, tPort := splitPort(ref.host)
	if kPort != tPort {
		return false
	}
	kl, tl := strings.Split(kName, "."), strings.Split(tName, ".")
	if len(kl) != len(tl) {
		return false
	}
	for i := range kl {
		if ok, err := path.Match(kl[i], tl[i]); err != nil || !ok {
			return false
		}
	}
	return strings.HasPrefix(ref.repo, kPath)
}

func splitPort(hostport string) (host, port string) {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.Contains(hostport[i:], "]") {
		return hostport[:i], hostport[i+1:]
	}
	return hostport, ""
}

// registryTLS builds an HTTP client for each registry with a CA file of
// its own; a bad file stops New, with a message naming it.
func (r *Runtime) registryTLS() error {
	for host, reg := range r.cfg.Registries {
		if reg.CA == "" {
			continue
		}
		pem, err := os.ReadFile(reg.CA)
		if err != nil {
			return fmt.Errorf("registry %s: CA file: %w", host, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("registry %s: CA file %s holds no PEM certificate", host, reg.CA)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if r.tlsHTTP == nil {
			r.tlsHTTP = map[string]*http.Client{}
		}
		r.tlsHTTP[host] = &http.Client{Transport: tr}
	}
	return nil
}

// httpFor is the client for a registry host.
func (r *Runtime) httpFor(host string) *http.Client {
	if c := r.tlsHTTP[host]; c != nil {
		return c
	}
	return r.http
}

// tlsHint adds what to do to a certificate verification error.
func tlsHint(host string, err error) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) {
		return fmt.Errorf("%w (if the registry's certificate is signed by a private CA, set containerd.registries.%q.ca in the agent's configuration)", err, host)
	}
	return err
}
