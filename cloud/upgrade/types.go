package upgrade

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"outpost.dev/cloud/crd"
	"outpost.dev/wire"
)

// The AgentUpgrade API: kind AgentUpgrade of crd.APIVersion.
const (
	Kind     = "AgentUpgrade"
	Resource = "agentupgrades"
)

// GVR is the AgentUpgrades' resource.
var GVR = crd.GVR(Resource)

// Arches are the architectures an artifact may be for (GOARCH).
var Arches = []string{"arm64", "arm", "riscv64", "amd64"}

// DefaultTrialSeconds is the trial of a spec that names none.
const DefaultTrialSeconds = 300

// AgentUpgrade rolls a new agent version out to edge nodes.
type AgentUpgrade = crd.Object[Spec, Status]

// Spec is what the administrator publishes.
type Spec struct {
	Version        string                `json:"version"`
	Artifacts      []Artifact            `json:"artifacts"`
	NodeSelector   *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	MaxUnavailable *intstr.IntOrString   `json:"maxUnavailable,omitempty"`
	TrialSeconds   int32                 `json:"trialSeconds,omitempty"`
	Paused         bool                  `json:"paused,omitempty"`
}

// Artifact is the agent binary for one architecture.
type Artifact struct {
	Arch      string `json:"arch"`
	URL       string `json:"url"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"`
}

// Status is the rollout as the relays record it: the one truth every
// replica reads.
type Status struct {
	Progress string       `json:"progress,omitempty"`
	Total    int          `json:"total"`
	Updated  int          `json:"updated"`
	InFlight int          `json:"inFlight"`
	Failed   int          `json:"failed"`
	Nodes    []NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one node's upgrade.
type NodeStatus struct {
	Name               string            `json:"name"`
	Phase              wire.UpgradePhase `json:"phase"`
	Reason             string            `json:"reason,omitempty"`
	Bytes              int64             `json:"bytes,omitempty"`
	LastTransitionTime metav1.Time       `json:"lastTransitionTime"`
}

// FromUnstructured converts what the dynamic client returns.
func FromUnstructured(u *unstructured.Unstructured) (*AgentUpgrade, error) {
	return crd.FromUnstructured[AgentUpgrade](Kind, u)
}

// parsed is a spec checked again by the relay (the API server validated
// it already, unless the CRD was installed without its schema).
type parsed struct {
	selector labels.Selector
	trial    uint32
	offers   map[string]*wire.UpgradeOffer // by arch
	urls     map[string]string             // by arch
}

// parse checks a's spec and builds the agents' offers from it.
func parse(a *AgentUpgrade) (*parsed, error) {
	s := &a.Spec
	if err := wire.CheckUpgradeVersion(s.Version); err != nil {
		return nil, err
	}
	p := &parsed{selector: labels.Everything(), trial: DefaultTrialSeconds, offers: map[string]*wire.UpgradeOffer{}, urls: map[string]string{}}
	if s.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(s.NodeSelector)
		if err != nil {
			return nil, fmt.Errorf("nodeSelector: %w", err)
		}
		p.selector = sel
	}
	if s.TrialSeconds != 0 {
		if s.TrialSeconds < 1 || s.TrialSeconds > wire.MaxUpgradeTrialSeconds {
			return nil, fmt.Errorf("trialSeconds %d out of range", s.TrialSeconds)
		}
		p.trial = uint32(s.TrialSeconds)
	}
	if len(s.Artifacts) == 0 {
		return nil, errors.New("no artifacts")
	}
	for _, ar := range s.Artifacts {
		if !knownArch(ar.Arch) {
			return nil, fmt.Errorf("artifact arch %q: want one of %s", ar.Arch, strings.Join(Arches, ", "))
		}
		if p.offers[ar.Arch] != nil {
			return nil, fmt.Errorf("two artifacts for %s", ar.Arch)
		}
		if !strings.HasPrefix(ar.URL, "https://") && !strings.HasPrefix(ar.URL, "http://") {
			return nil, fmt.Errorf("artifact %s: url must be http or https", ar.Arch)
		}
		d, err := hex.DecodeString(ar.SHA256)
		if err != nil || len(d) != 32 {
			return nil, fmt.Errorf("artifact %s: sha256 must be 64 hex digits", ar.Arch)
		}
		sig, err := base64.StdEncoding.DecodeString(ar.Signature)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: signature is not base64", ar.Arch)
		}
		o := &wire.UpgradeOffer{Name: a.Name, Version: s.Version, Size: ar.Size, SHA256: d, Signature: sig, TrialSeconds: p.trial}
		if err := o.Validate(); err != nil {
			return nil, fmt.Errorf("artifact %s: %w", ar.Arch, err)
		}
		p.offers[ar.Arch], p.urls[ar.Arch] = o, ar.URL
	}
	return p, nil
}

func knownArch(a string) bool {
	for _, k := range Arches {
		if a == k {
			return true
		}
	}
	return false
}

// MaxUnavailable resolves v against the number of selected nodes: an
// integer as it is, a percentage rounded down; at least 1 either way
// (default 1).
func MaxUnavailable(v *intstr.IntOrString, total int) (int, error) {
	if v == nil {
		return 1, nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 1 {
			return 0, fmt.Errorf("maxUnavailable %d must be at least 1", v.IntVal)
		}
		return int(v.IntVal), nil
	}
	s, ok := strings.CutSuffix(v.StrVal, "%")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 1 || n > 100 {
		return 0, fmt.Errorf("maxUnavailable %q must be an integer or a percentage from 1%% to 100%%", v.StrVal)
	}
	return max(1, int(math.Floor(float64(total)*float64(n)/100))), nil
}

// inFlight reports whether a node in phase p counts as unavailable.
func inFlight(p wire.UpgradePhase) bool { return p != "" && !p.Terminal() }
