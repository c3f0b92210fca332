package wire

import (
	"errors"
	"fmt"
	"net"
)

// Downstream objects. The relay translates Kubernetes objects bound to a
// node into these small types, so the agent never links Kubernetes code; a
// pod using a field that has no place here is refused by the relay with a
// status naming the field, never sent half-understood.

// Kind says what an Object is.
type Kind uint8

// Object kinds.
const (
	KindPod       Kind = 1
	KindConfigMap Kind = 2
	KindSecret    Kind = 3
	KindDevice    Kind = 4
	// KindToken holds a pod's service-account tokens (PodTokens); its UID
	// is the pod's.
	KindToken Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindPod:
		return "pod"
	case KindConfigMap:
		return "configmap"
	case KindSecret:
		return "secret"
	case KindDevice:
		return "device"
	case KindToken:
		return "token"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Limits on downstream objects, beyond the frame size.
const (
	maxObjects    = 1024 // per Sync frame, and versions per Hello
	maxContainers = 64
	maxItems      = 256 // env vars, mounts, volumes, args, probe headers
	maxValueLen   = 64 << 10
)

// ObjectVersion names an object the agent holds and the version it holds,
// so the relay can send only what differs (in the Hello).
type ObjectVersion struct {
	Kind    Kind   `cbor:"1,keyasint"`
	UID     string `cbor:"2,keyasint"`
	Version string `cbor:"3,keyasint"`
}

// Validate reports a missing field.
func (v *ObjectVersion) Validate() error {
	if v.Kind < KindPod || v.Kind > KindToken {
		return fmt.Errorf("object version: unknown kind %d", v.Kind)
	}
	if err := checkText("object version: uid", v.UID, 128, true); err != nil {
		return err
	}
	return checkText("object version: version", v.Version, 64, true)
}

// ObjectRef names an object by kind and UID.
type ObjectRef struct {
	Kind Kind   `cbor:"1,keyasint"`
	UID  string `cbor:"2,keyasint"`
}

// Sync carries downstream changes (TypeSync). After a hello the relay sends
// the objects whose version differs from the hello's, and explicit deletes
// for the ones the agent holds that are gone, in one or more frames with
// Initial set, the last also with Complete; then deltas follow as they
// happen.
type Sync struct {
	Upserts  []Object    `cbor:"1,keyasint,omitempty"`
	Deletes  []ObjectRef `cbor:"2,keyasint,omitempty"`
	Initial  bool        `cbor:"3,keyasint,omitempty"`
	Complete bool        `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (s *Sync) Validate() error {
	if len(s.Upserts)+len(s.Deletes) > maxObjects {
		return fmt.Errorf("sync: %d objects (limit %d)", len(s.Upserts)+len(s.Deletes), maxObjects)
	}
	for i := range s.Upserts {
		if err := s.Upserts[i].Validate(); err != nil {
			return err
		}
	}
	for _, d := range s.Deletes {
		if d.Kind < KindPod || d.Kind > KindToken {
			return fmt.Errorf("sync: delete of unknown kind %d", d.Kind)
		}
		if err := checkText("sync: delete uid", d.UID, 128, true); err != nil {
			return err
		}
	}
	if s.Complete && !s.Initial {
		return errors.New("sync: complete without initial")
	}
	return nil
}

// Object is one downstream object; exactly the body matching Kind is set.
type Object struct {
	Kind      Kind       `cbor:"1,keyasint"`
	UID       string     `cbor:"2,keyasint"`
	Namespace string     `cbor:"3,keyasint"`
	Name      string     `cbor:"4,keyasint"`
	Version   string     `cbor:"5,keyasint"`
	Pod       *Pod       `cbor:"6,keyasint,omitempty"`
	ConfigMap *ConfigMap `cbor:"7,keyasint,omitempty"`
	Secret    *Secret    `cbor:"8,keyasint,omitempty"`
	Device    *Device    `cbor:"9,keyasint,omitempty"`
	Token     *PodTokens `cbor:"10,keyasint,omitempty"`
	// LinkID is a Device's link id: the short name twin reports on this
	// connection may use for it (TwinReport.ID). It names this object at
	// this Version; 0 means none (the agent names the Device).
	LinkID uint32 `cbor:"11,keyasint,omitempty"`
}

// Validate reports a missing or inconsistent field.
func (o *Object) Validate() error {
	for _, f := range []struct {
		what, v string
		max     int
	}{{"uid", o.UID, 128}, {"namespace", o.Namespace, 63}, {"name", o.Name, maxNameLen}, {"version", o.Version, 64}} {
		if err := checkText("object: "+f.what, f.v, f.max, true); err != nil {
			return err
		}
	}
	// The UID, namespace and name become paths on the gateway.
	if err := CheckUID("object: uid", o.UID); err != nil {
		return err
	}
	if err := CheckLabel("object "+o.Name+": namespace", o.Namespace); err != nil {
		return err
	}
	// A Device's name is a DNS subdomain too (the Device CRD says so),
	// though Kubernetes would take any path segment for a custom
	// resource: it becomes an MQTT topic level, where + and # are
	// wildcards.
	if err := CheckSubdomain("object "+o.Namespace+"/…: name", o.Name); err != nil {
		return err
	}
	if o.LinkID != 0 && (o.Kind != KindDevice || o.LinkID > MaxLinkID) {
		return fmt.Errorf("object %s/%s: link id %d on a %s or out of range", o.Namespace, o.Name, o.LinkID, o.Kind)
	}
	bodies := 0
	for _, set := range []bool{o.Pod != nil, o.ConfigMap != nil, o.Secret != nil, o.Device != nil, o.Token != nil} {
		if set {
			bodies++
		}
	}
	if bodies != 1 {
		return fmt.Errorf("object %s/%s: %d bodies, want exactly one", o.Namespace, o.Name, bodies)
	}
	switch {
	case o.Kind == KindPod && o.Pod != nil:
		return o.Pod.Validate()
	case o.Kind == KindConfigMap && o.ConfigMap != nil:
		return o.ConfigMap.Validate()
	case o.Kind == KindSecret && o.Secret != nil:
		return o.Secret.Validate()
	case o.Kind == KindDevice && o.Device != nil:
		return o.Device.Validate()
	case o.Kind == KindToken && o.Token != nil:
		return o.Token.Validate()
	}
	return fmt.Errorf("object %s/%s: body does not match kind %s", o.Namespace, o.Name, o.Kind)
}

// Pod is the part of a Kubernetes pod the agent acts on.
type Pod struct {
	Containers     []Container `cbor:"1,keyasint"`
	InitContainers []Container `cbor:"2,keyasint,omitempty"`
	Volumes        []Volume    `cbor:"3,keyasint,omitempty"`
	// RestartPolicy is Always, OnFailure or Never.
	RestartPolicy                 string   `cbor:"4,keyasint"`
	TerminationGracePeriodSeconds int64    `cbor:"5,keyasint,omitempty"`
	HostNetwork                   bool     `cbor:"6,keyasint,omitempty"`
	ImagePullSecrets              []string `cbor:"7,keyasint,omitempty"`
	ServiceAccountName            string   `cbor:"8,keyasint,omitempty"`
	// Deleting is set once the pod has a deletion timestamp: stop its
	// containers within DeletionGracePeriodSeconds, then report.
	Deleting                   bool   `cbor:"9,keyasint,omitempty"`
	DeletionGracePeriodSeconds int64  `cbor:"10,keyasint,omitempty"`
	Hostname                   string `cbor:"11,keyasint,omitempty"`
	// SupplementalGroups and FSGroup (securityContext) are added to every
	// container process's groups; FSGroup also owns the pod's emptyDir,
	// ConfigMap, Secret and projected volume files, changed as
	// FSGroupChangePolicy says ("Always" when empty, or "OnRootMismatch").
	SupplementalGroups  []int64 `cbor:"12,keyasint,omitempty"`
	FSGroup             *int64  `cbor:"13,keyasint,omitempty"`
	FSGroupChangePolicy string  `cbor:"14,keyasint,omitempty"`
	// Sysctls are securityContext.sysctls, set in the pod's namespaces.
	// The agent admits only the kubelet's safe set and the ones its
	// config allows.
	Sysctls []Sysctl `cbor:"15,keyasint,omitempty"`
	// Labels and Annotations are the pod's, carried only when its
	// downward API reads them (metadata.labels, metadata.annotations).
	Labels      map[string]string `cbor:"16,keyasint,omitempty" json:",omitempty"`
	Annotations map[string]string `cbor:"17,keyasint,omitempty" json:",omitempty"`
	// ActiveDeadlineSeconds bounds how long the pod runs, counted from
	// its start: past it the agent kills its containers and reports it
	// Failed with reason DeadlineExceeded, as a kubelet does. Zero: none.
	ActiveDeadlineSeconds int64 `cbor:"18,keyasint,omitempty" json:",omitempty"`
	// Namespaces are the pod's PID and IPC namespace choices; nil: each
	// container its own PID and IPC namespace.
	Namespaces *PodNamespaces `cbor:"19,keyasint,omitempty" json:",omitempty"`
	// Finished is the pod's phase in the API when it is Succeeded or
	// Failed: the agent keeps it (its logs stay readable until the pod is
	// deleted) but runs nothing of it again.
	Finished string `cbor:"20,keyasint,omitempty" json:",omitempty"`
	// Resources are the pod-level spec.resources: limits bound the pod's
	// cgroup, and stand for a container's own when it sets none (the
	// downward API).
	Resources *PodResources `cbor:"21,keyasint,omitempty" json:",omitempty"`
	// DNSPolicy is ClusterFirst (empty), ClusterFirstWithHostNet, Default
	// or None; DNSConfig is merged into what the policy gives (None: all
	// of it), as a kubelet writes a pod's resolv.conf.
	DNSPolicy string     `cbor:"26,keyasint,omitempty"`
	DNSConfig *DNSConfig `cbor:"27,keyasint,omitempty"`
	// HostAliases are appended to the pod's hosts file.
	HostAliases []HostAlias `cbor:"28,keyasint,omitempty"`
	// Subdomain and SetHostnameAsFQDN: with a subdomain the pod's FQDN is
	// hostname.subdomain.namespace.svc.<cluster domain>, in its hosts file
	// and, with SetHostnameAsFQDN, as its hostname.
	Subdomain         string `cbor:"29,keyasint,omitempty"`
	SetHostnameAsFQDN bool   `cbor:"30,keyasint,omitempty"`
	// EphemeralContainers are the containers kubectl debug adds to the
	// running pod (spec.ephemeralContainers): each started once, never
	// restarted, and not part of the pod's phase or readiness.
	EphemeralContainers []EphemeralContainer `cbor:"23,keyasint,omitempty" json:",omitempty"`
}

// PodNamespaces are a pod's namespace choices.
type PodNamespaces struct {
	// PID is the pod's PID namespace: "" gives each container its own,
	// PIDPod one shared by the pod's containers (shareProcessNamespace),
	// PIDHost the gateway's (hostPID).
	PID string `cbor:"1,keyasint,omitempty"`
	// HostIPC shares the gateway's IPC namespace (hostIPC).
	HostIPC bool `cbor:"2,keyasint,omitempty"`
}

// PIDMode is Namespaces.PID, "" without Namespaces.
func (p *Pod) PIDMode() string {
	if p.Namespaces == nil {
		return ""
	}
	return p.Namespaces.PID
}

// HostIPC says whether the pod shares the gateway's IPC namespace.
func (p *Pod) HostIPC() bool { return p.Namespaces != nil && p.Namespaces.HostIPC }

// Pod PID namespace modes (PodNamespaces.PID).
const (
	PIDPod  = "Pod"
	PIDHost = "Host"
)

// PodResources are a pod's or a container's cpu and memory limits and
// requests; zero is not set.
type PodResources struct {
	CPUMillis          int64 `cbor:"1,keyasint,omitempty"`
	MemoryBytes        int64 `cbor:"2,keyasint,omitempty"`
	RequestCPUMillis   int64 `cbor:"3,keyasint,omitempty"`
	RequestMemoryBytes int64 `cbor:"4,keyasint,omitempty"`
}

// Validate reports a negative figure.
func (r *PodResources) Validate(what string) error {
	if r.CPUMillis < 0 || r.MemoryBytes < 0 || r.RequestCPUMillis < 0 || r.RequestMemoryBytes < 0 {
		return fmt.Errorf("%s: negative resource", what)
	}
	return nil
}

// DNSConfig is a pod's spec.dnsConfig.
type DNSConfig struct {
	Nameservers []string    `cbor:"1,keyasint,omitempty"`
	Searches    []string    `cbor:"2,keyasint,omitempty"`
	Options     []DNSOption `cbor:"3,keyasint,omitempty"`
}

// DNSOption is one resolv.conf option; Value is optional.
type DNSOption struct {
	Name  string  `cbor:"1,keyasint"`
	Value *string `cbor:"2,keyasint,omitempty"`
}

// HostAlias is one line of a pod's hosts file: IP and its names.
type HostAlias struct {
	IP        string   `cbor:"1,keyasint"`
	Hostnames []string `cbor:"2,keyasint,omitempty"`
}

// Bounds on a pod's DNS settings: the kubelet's (3 nameservers, 32
// search domains, each at most 253 characters) and a generous cap on
// host aliases.
const (
	maxNameservers = 3
	maxSearches    = 32
	maxDNSOptions  = 32
	maxHostAliases = 64
)

// validateNetwork checks the DNS settings and host aliases: every value
// lands in a file inside the pod (resolv.conf, hosts), so no value may
// break a line or a field.
func (p *Pod) validateNetwork() error {
	switch p.DNSPolicy {
	case "", "ClusterFirst", "ClusterFirstWithHostNet", "Default", "None":
	default:
		return fmt.Errorf("pod: dnsPolicy %q is not ClusterFirst, ClusterFirstWithHostNet, Default or None", p.DNSPolicy)
	}
	if c := p.DNSConfig; c != nil {
		if len(c.Nameservers) > maxNameservers || len(c.Searches) > maxSearches || len(c.Options) > maxDNSOptions {
			return fmt.Errorf("pod: dnsConfig has more than %d nameservers, %d searches or %d options", maxNameservers, maxSearches, maxDNSOptions)
		}
		for _, ns := range c.Nameservers {
			if net.ParseIP(ns) == nil {
				return fmt.Errorf("pod: dnsConfig nameserver %q is not an IP address", ns)
			}
		}
		for _, s := range c.Searches {
			if err := checkWord("pod: dnsConfig search", s, maxNameLen); err != nil {
				return err
			}
		}
		for _, o := range c.Options {
			if err := checkWord("pod: dnsConfig option", o.Name, 64); err != nil {
				return err
			}
			if o.Value != nil && *o.Value != "" {
				if err := checkWord("pod: dnsConfig option "+o.Name, *o.Value, 64); err != nil {
					return err
				}
			}
		}
	} else if p.DNSPolicy == "None" {
		return errors.New("pod: dnsPolicy None needs a dnsConfig")
	}
	if len(p.HostAliases) > maxHostAliases {
		return fmt.Errorf("pod: %d hostAliases (limit %d)", len(p.HostAliases), maxHostAliases)
	}
	for _, a := range p.HostAliases {
		if net.ParseIP(a.IP) == nil {
			return fmt.Errorf("pod: hostAliases ip %q is not an IP address", a.IP)
		}
		if len(a.Hostnames) > maxItems {
			return fmt.Errorf("pod: hostAliases %s has %d hostnames (limit %d)", a.IP, len(a.Hostnames), maxItems)
		}
		for _, h := range a.Hostnames {
			if err := checkWord("pod: hostAliases hostname", h, maxNameLen); err != nil {
				return err
			}
		}
	}
	if p.Subdomain != "" {
		return CheckLabel("pod: subdomain", p.Subdomain)
	}
	return nil
}

// checkWord accepts a non-empty printable value without white space, '#'
// or ';' (a comment in resolv.conf and hosts), at most max bytes.
func checkWord(what, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%s: %d bytes (want 1 to %d)", what, len(s), max)
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || r == '#' || r == ';' {
			return fmt.Errorf("%s %q: white space, control characters, '#' and ';' are not allowed", what, s)
		}
	}
	return nil
}

// Sysctl is one kernel parameter of a pod.
type Sysctl struct {
	Name  string `cbor:"1,keyasint"`
	Value string `cbor:"2,keyasint"`
}

// Bounds on a pod's groups: a GID is a 32-bit value other than -1.
const (
	maxGroups = 64
	maxGID    = 1<<32 - 2
)

// Validate reports a missing or out-of-range field.
func (p *Pod) Validate() error {
	if len(p.Containers) == 0 {
		return errors.New("pod: no containers")
	}
	if len(p.Containers)+len(p.InitContainers) > maxContainers {
		return fmt.Errorf("pod: %d containers (limit %d)", len(p.Containers)+len(p.InitContainers), maxContainers)
	}
	switch p.RestartPolicy {
	case "Always", "OnFailure", "Never":
	default:
		return fmt.Errorf("pod: restartPolicy %q is not Always, OnFailure or Never", p.RestartPolicy)
	}
	if p.TerminationGracePeriodSeconds < 0 || p.DeletionGracePeriodSeconds < 0 {
		return errors.New("pod: negative grace period")
	}
	for _, cs := range [][]Container{p.InitContainers, p.Containers} {
		for i := range cs {
			if err := cs[i].Validate(); err != nil {
				return err
			}
		}
	}
	for i := range p.Containers {
		if p.Containers[i].Sidecar {
			return fmt.Errorf("pod: container %s: only init containers can be sidecars", p.Containers[i].Name)
		}
	}
	if len(p.Volumes) > maxItems || len(p.ImagePullSecrets) > maxItems {
		return errors.New("pod: too many volumes or pull secrets")
	}
	names := map[string]bool{}
	for _, cs := range [][]Container{p.InitContainers, p.Containers} {
		for i := range cs {
			if names[cs[i].Name] {
				return fmt.Errorf("pod: two containers named %q", cs[i].Name)
			}
			names[cs[i].Name] = true
		}
	}
	clear(names)
	for i := range p.Volumes {
		if err := p.Volumes[i].Validate(); err != nil {
			return err
		}
		if names[p.Volumes[i].Name] {
			return fmt.Errorf("pod: two volumes named %q", p.Volumes[i].Name)
		}
		names[p.Volumes[i].Name] = true
	}
	if err := p.validateGroups(); err != nil {
		return err
	}
	if err := p.validateFields(); err != nil {
		return err
	}
	if err := p.validateNetwork(); err != nil {
		return err
	}
	if err := p.validateEphemeral(); err != nil {
		return err
	}
	if p.Hostname != "" {
		return CheckLabel("pod: hostname", p.Hostname)
	}
	return nil
}

// Bounds on the metadata a pod carries (the API server's are 63-byte
// label values and 256 KiB of annotations in all).
const (
	maxMetaEntries = 256
	maxMetaBytes   = 256 << 10
)

// validateFields checks the fields added for the downward API and the
// pod's namespaces and resources.
func (p *Pod) validateFields() error {
	for _, m := range []struct {
		what string
		m    map[string]string
	}{{"labels", p.Labels}, {"annotations", p.Annotations}} {
		if len(m.m) > maxMetaEntries {
			return fmt.Errorf("pod: %d %s (limit %d)", len(m.m), m.what, maxMetaEntries)
		}
		n := 0
		for k, v := range m.m {
			if err := checkText("pod: "+m.what+" key", k, 317, true); err != nil {
				return err
			}
			n += len(k) + len(v)
		}
		if n > maxMetaBytes {
			return fmt.Errorf("pod: %s of %d bytes (limit %d)", m.what, n, maxMetaBytes)
		}
	}
	if p.ActiveDeadlineSeconds < 0 {
		return errors.New("pod: negative activeDeadlineSeconds")
	}
	switch p.PIDMode() {
	case "", PIDPod, PIDHost:
	default:
		return fmt.Errorf("pod: PID namespace %q is not %q or %q", p.PIDMode(), PIDPod, PIDHost)
	}
	switch p.Finished {
	case "", "Succeeded", "Failed":
	default:
		return fmt.Errorf("pod: finished phase %q is not Succeeded or Failed", p.Finished)
	}
	if p.Resources != nil {
		return p.Resources.Validate("pod: resources")
	}
	return nil
}

// validateGroups checks the pod-level securityContext groups and sysctls.
func (p *Pod) validateGroups() error {
	if len(p.SupplementalGroups) > maxGroups {
		return fmt.Errorf("pod: %d supplementalGroups (limit %d)", len(p.SupplementalGroups), maxGroups)
	}
	for _, g := range p.Groups() {
		if g < 0 || g > maxGID {
			return fmt.Errorf("pod: group %d out of range [0, %d]", g, int64(maxGID))
		}
	}
	if len(p.Sysctls) > maxGroups {
		return fmt.Errorf("pod: %d sysctls (limit %d)", len(p.Sysctls), maxGroups)
	}
	for _, sc := range p.Sysctls {
		if err := checkText("pod: sysctl name", sc.Name, 256, true); err != nil {
			return err
		}
		if err := checkText("pod: sysctl "+sc.Name, sc.Value, 4096, false); err != nil {
			return err
		}
	}
	switch p.FSGroupChangePolicy {
	case "", "Always", "OnRootMismatch":
	default:
		return fmt.Errorf("pod: fsGroupChangePolicy %q is not Always or OnRootMismatch", p.FSGroupChangePolicy)
	}
	return nil
}

// Groups is SupplementalGroups, then FSGroup if set: the groups every
// container process of the pod gets besides its own.
func (p *Pod) Groups() []int64 {
	out := append([]int64(nil), p.SupplementalGroups...)
	if p.FSGroup != nil {
		out = append(out, *p.FSGroup)
	}
	return out
}

// Container is one container of a pod.
type Container struct {
	Name       string        `cbor:"1,keyasint"`
	Image      string        `cbor:"2,keyasint"`
	Command    []string      `cbor:"3,keyasint,omitempty"`
	Args       []string      `cbor:"4,keyasint,omitempty"`
	Env        []EnvVar      `cbor:"5,keyasint,omitempty"`
	WorkingDir string        `cbor:"6,keyasint,omitempty"`
	Mounts     []VolumeMount `cbor:"7,keyasint,omitempty"`
	// Limits are resources.limits; zero means none.
	CPUMillis   int64 `cbor:"8,keyasint,omitempty"`
	MemoryBytes int64 `cbor:"9,keyasint,omitempty"`
	Privileged  bool  `cbor:"10,keyasint,omitempty"`
	// CapAdd and CapDrop are capability names without the CAP_ prefix.
	CapAdd          []string `cbor:"11,keyasint,omitempty"`
	CapDrop         []string `cbor:"12,keyasint,omitempty"`
	LivenessProbe   *Probe   `cbor:"13,keyasint,omitempty"`
	ReadinessProbe  *Probe   `cbor:"14,keyasint,omitempty"`
	StartupProbe    *Probe   `cbor:"15,keyasint,omitempty"`
	ImagePullPolicy string   `cbor:"16,keyasint,omitempty"` // Always, IfNotPresent, Never
	RunAsUser       *int64   `cbor:"17,keyasint,omitempty"`
	RunAsGroup      *int64   `cbor:"18,keyasint,omitempty"`
	// The fields below carry json omitempty so that the agent's hash of a
	// container that does not set them stays what it was before they were
	// added (a new agent restarts no container).

	// Seccomp is securityContext.seccompProfile, the container's or else
	// the pod's; nil is RuntimeDefault.
	Seccomp *SeccompProfile `cbor:"19,keyasint,omitempty" json:",omitempty"`
	// NoNewPrivileges sets no_new_privs: securityContext.allowPrivilegeEscalation
	// is false (the kubelet's rule; unset allows escalation).
	NoNewPrivileges bool `cbor:"20,keyasint,omitempty" json:",omitempty"`
	// ReadOnlyRootFilesystem mounts the image's root file system read-only.
	ReadOnlyRootFilesystem bool `cbor:"21,keyasint,omitempty" json:",omitempty"`
	// ProcUnmasked is procMount: Unmasked: /proc and /sys without the
	// masked and read-only paths.
	ProcUnmasked bool `cbor:"22,keyasint,omitempty" json:",omitempty"`
	// RunAsNonRoot is securityContext.runAsNonRoot, the container's or else
	// the pod's: the agent refuses to start the container as uid 0
	// (RunAsUser, or else the image's user), as a kubelet does.
	RunAsNonRoot bool `cbor:"23,keyasint,omitempty" json:",omitempty"`
	// EnvFrom are the container's envFrom sources, in order; Env wins
	// over them.
	EnvFrom []EnvFromSource `cbor:"24,keyasint,omitempty" json:",omitempty"`
	// RequestCPUMillis and RequestMemoryBytes are resources.requests
	// (for the downward API; the scheduler already used them).
	RequestCPUMillis   int64 `cbor:"25,keyasint,omitempty" json:",omitempty"`
	RequestMemoryBytes int64 `cbor:"26,keyasint,omitempty" json:",omitempty"`
	// Stdin keeps the container's standard input open (for attach);
	// StdinOnce closes it after the first attach ends; TTY gives the
	// container a terminal.
	Stdin     bool `cbor:"27,keyasint,omitempty" json:",omitempty"`
	StdinOnce bool `cbor:"28,keyasint,omitempty" json:",omitempty"`
	TTY       bool `cbor:"29,keyasint,omitempty" json:",omitempty"`
	// PostStart and PreStop are lifecycle.postStart and lifecycle.preStop.
	PostStart *Handler `cbor:"30,keyasint,omitempty" json:",omitempty"`
	PreStop   *Handler `cbor:"31,keyasint,omitempty" json:",omitempty"`
	// Sidecar is an init container's restartPolicy: Always: started in
	// order with the other init containers, kept running beside the main
	// containers (restarted whenever it exits) and stopped after them.
	Sidecar bool `cbor:"32,keyasint,omitempty" json:",omitempty"`
	// Ports are the container ports published on the node (hostPort set;
	// ports without a hostPort are informational and not carried).
	Ports []ContainerPort `cbor:"35,keyasint,omitempty" json:",omitempty"`
}

// EnvFromSource is one envFrom entry: every key of a ConfigMap or a
// Secret (exactly one is named) becomes a variable, Prefix prepended.
type EnvFromSource struct {
	Prefix    string `cbor:"1,keyasint,omitempty"`
	ConfigMap string `cbor:"2,keyasint,omitempty"`
	Secret    string `cbor:"3,keyasint,omitempty"`
	Optional  bool   `cbor:"4,keyasint,omitempty"`
}

// Validate reports a source naming not exactly one object.
func (e *EnvFromSource) Validate() error {
	if (e.ConfigMap == "") == (e.Secret == "") {
		return errors.New("envFrom: name exactly one of a ConfigMap or a Secret")
	}
	if err := checkText("envFrom: prefix", e.Prefix, 256, false); err != nil {
		return err
	}
	return checkText("envFrom: name", e.ConfigMap+e.Secret, maxNameLen, true)
}

// Handler is a lifecycle hook: exactly one of Exec (a command run in the
// container), HTTPGet (a request; the host defaults to the pod's
// address) or SleepSeconds.
type Handler struct {
	Exec         []string `cbor:"1,keyasint,omitempty"`
	HTTPGet      *HTTPGet `cbor:"2,keyasint,omitempty"`
	SleepSeconds int64    `cbor:"3,keyasint,omitempty"`
}

// maxSleepSeconds bounds a sleep hook (a grace period bounds a preStop
// one anyway).
const maxSleepSeconds = 24 * 3600

// Validate reports a handler without exactly one action, or one out of
// range.
func (h *Handler) Validate() error {
	n := 0
	for _, set := range []bool{len(h.Exec) > 0, h.HTTPGet != nil, h.SleepSeconds != 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("lifecycle hook: %d actions, want exactly one of exec, httpGet, sleep", n)
	}
	if h.SleepSeconds < 0 || h.SleepSeconds > maxSleepSeconds {
		return fmt.Errorf("lifecycle hook: sleep of %d s (0 to %d)", h.SleepSeconds, maxSleepSeconds)
	}
	if len(h.Exec) > maxItems {
		return errors.New("lifecycle hook: too many exec words")
	}
	for _, s := range h.Exec {
		if err := checkText("lifecycle hook: exec argument", s, maxValueLen, false); err != nil {
			return err
		}
	}
	if g := h.HTTPGet; g != nil {
		if g.Port <= 0 || g.Port > 65535 {
			return errors.New("lifecycle hook: port out of range")
		}
		if len(g.Headers) > maxItems {
			return errors.New("lifecycle hook: too many headers")
		}
	}
	return nil
}

// ContainerPort is a container port published on the node at HostPort
// (through the CNI portmap plugin), on HostIP if set.
type ContainerPort struct {
	ContainerPort int32  `cbor:"1,keyasint"`
	HostPort      int32  `cbor:"2,keyasint"`
	Protocol      string `cbor:"3,keyasint,omitempty"` // TCP (empty), UDP or SCTP
	HostIP        string `cbor:"4,keyasint,omitempty"`
}

// Validate reports a port out of range, an unknown protocol or a bad IP.
func (p *ContainerPort) Validate() error {
	if p.ContainerPort <= 0 || p.ContainerPort > 65535 || p.HostPort <= 0 || p.HostPort > 65535 {
		return fmt.Errorf("port %d→%d out of range [1, 65535]", p.HostPort, p.ContainerPort)
	}
	switch p.Protocol {
	case "", "TCP", "UDP", "SCTP":
	default:
		return fmt.Errorf("port %d: protocol %q is not TCP, UDP or SCTP", p.HostPort, p.Protocol)
	}
	if p.HostIP != "" && net.ParseIP(p.HostIP) == nil {
		return fmt.Errorf("port %d: hostIP %q is not an IP address", p.HostPort, p.HostIP)
	}
	return nil
}

// Seccomp profile types, as in a pod's securityContext.seccompProfile.
const (
	SeccompRuntimeDefault = "RuntimeDefault"
	SeccompUnconfined     = "Unconfined"
	SeccompLocalhost      = "Localhost"
)

// SeccompProfile is a container's seccomp profile: RuntimeDefault,
// Unconfined, or Localhost with LocalhostProfile, a path relative to the
// gateway's seccomp profile directory (the agent resolves it beneath that
// directory and refuses anything leading out of it).
type SeccompProfile struct {
	Type             string `cbor:"1,keyasint"`
	LocalhostProfile string `cbor:"2,keyasint,omitempty"`
}

// Validate reports an unknown type or a Localhost profile without a name.
func (p *SeccompProfile) Validate() error {
	switch p.Type {
	case SeccompRuntimeDefault, SeccompUnconfined:
		if p.LocalhostProfile != "" {
			return fmt.Errorf("seccompProfile: localhostProfile is only for type %s", SeccompLocalhost)
		}
		return nil
	case SeccompLocalhost:
		return checkText("seccompProfile: localhostProfile", p.LocalhostProfile, 4096, true)
	}
	return fmt.Errorf("seccompProfile: type %q is not %s, %s or %s", p.Type, SeccompRuntimeDefault, SeccompUnconfined, SeccompLocalhost)
}

// Validate reports a missing or out-of-range field.
func (c *Container) Validate() error {
	if err := CheckLabel("container: name", c.Name); err != nil {
		return err
	}
	if err := checkText("container "+c.Name+": image", c.Image, 512, true); err != nil {
		return err
	}
	if len(c.Command)+len(c.Args) > maxItems || len(c.Env) > maxItems || len(c.Mounts) > maxItems ||
		len(c.CapAdd)+len(c.CapDrop) > 64 {
		return fmt.Errorf("container %s: too many command words, env vars, mounts or capabilities", c.Name)
	}
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		if err := checkText("container "+c.Name+": argument", s, maxValueLen, false); err != nil {
			return err
		}
	}
	for i := range c.Env {
		if err := c.Env[i].Validate(); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	for _, m := range c.Mounts {
		if m.Name == "" || m.MountPath == "" || len(m.MountPath) > 4096 {
			return fmt.Errorf("container %s: volume mount needs a name and a path", c.Name)
		}
		if err := CheckLabel("container "+c.Name+": volume mount", m.Name); err != nil {
			return err
		}
		if err := CheckSubPath("container "+c.Name+": volume mount "+m.Name+": subPath", m.SubPath); err != nil {
			return err
		}
		switch m.Propagation {
		case "", PropagationHostToContainer:
		case PropagationBidirectional:
			if !c.Privileged {
				return fmt.Errorf("container %s: volume mount %s: Bidirectional propagation needs a privileged container", c.Name, m.Name)
			}
		default:
			return fmt.Errorf("container %s: volume mount %s: unknown propagation %q", c.Name, m.Name, m.Propagation)
		}
	}
	if c.CPUMillis < 0 || c.MemoryBytes < 0 || c.RequestCPUMillis < 0 || c.RequestMemoryBytes < 0 {
		return fmt.Errorf("container %s: negative limit or request", c.Name)
	}
	if len(c.EnvFrom) > maxItems {
		return fmt.Errorf("container %s: too many envFrom sources", c.Name)
	}
	for i := range c.EnvFrom {
		if err := c.EnvFrom[i].Validate(); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	if err := c.validateSecurity(); err != nil {
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	for _, p := range []*Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil {
			if err := p.Validate(); err != nil {
				return fmt.Errorf("container %s: %w", c.Name, err)
			}
		}
	}
	for _, h := range []*Handler{c.PostStart, c.PreStop} {
		if h != nil {
			if err := h.Validate(); err != nil {
				return fmt.Errorf("container %s: %w", c.Name, err)
			}
		}
	}
	if len(c.Ports) > maxItems {
		return fmt.Errorf("container %s: %d ports (limit %d)", c.Name, len(c.Ports), maxItems)
	}
	for i := range c.Ports {
		if err := c.Ports[i].Validate(); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	return checkText("container "+c.Name+": workingDir", c.WorkingDir, 4096, false)
}

// validateSecurity checks the securityContext fields.
func (c *Container) validateSecurity() error {
	if c.Seccomp != nil {
		if err := c.Seccomp.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// EnvVar is an environment variable: a value, or where to take it from.
type EnvVar struct {
	Name  string     `cbor:"1,keyasint"`
	Value string     `cbor:"2,keyasint,omitempty"`
	From  *EnvSource `cbor:"3,keyasint,omitempty"`
}

// Validate reports a missing name or a source without a reference.
func (e *EnvVar) Validate() error {
	if err := checkText("env: name", e.Name, 256, true); err != nil {
		return err
	}
	if err := checkText("env "+e.Name, e.Value, maxValueLen, false); err != nil {
		return err
	}
	if e.From != nil {
		n := 0
		for _, set := range []bool{e.From.ConfigMap != nil, e.From.Secret != nil, e.From.Field != "", e.From.Resource != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("env %s: valueFrom needs exactly one source", e.Name)
		}
		for _, r := range []*KeyRef{e.From.ConfigMap, e.From.Secret} {
			if r != nil && (r.Name == "" || r.Key == "") {
				return fmt.Errorf("env %s: valueFrom needs a name and a key", e.Name)
			}
		}
		if err := checkText("env "+e.Name+": fieldPath", e.From.Field, 512, false); err != nil {
			return err
		}
		if r := e.From.Resource; r != nil {
			if err := r.Validate(); err != nil {
				return fmt.Errorf("env %s: %w", e.Name, err)
			}
		}
	}
	return nil
}

// EnvSource is valueFrom: one of a ConfigMap key, a Secret key, a field
// path of the downward API (metadata.name, metadata.namespace, metadata.uid,
// metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName,
// spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP,
// status.hostIPs) or a container's resource (resourceFieldRef).
type EnvSource struct {
	ConfigMap *KeyRef      `cbor:"1,keyasint,omitempty"`
	Secret    *KeyRef      `cbor:"2,keyasint,omitempty"`
	Field     string       `cbor:"3,keyasint,omitempty"`
	Resource  *ResourceRef `cbor:"4,keyasint,omitempty" json:",omitempty"`
}

// ResourceRef is a resourceFieldRef: Resource (limits.cpu, limits.memory,
// requests.cpu, requests.memory) of the pod's container Container (empty:
// the container being started), divided by Divisor rounding up: Divisor
// is in millicores for cpu and in bytes for memory; zero is one core or
// one byte.
type ResourceRef struct {
	Container string `cbor:"1,keyasint,omitempty"`
	Resource  string `cbor:"2,keyasint"`
	Divisor   int64  `cbor:"3,keyasint,omitempty"`
}

// Resource names a ResourceRef may read.
const (
	ResourceLimitsCPU      = "limits.cpu"
	ResourceLimitsMemory   = "limits.memory"
	ResourceRequestsCPU    = "requests.cpu"
	ResourceRequestsMemory = "requests.memory"
)

// Validate reports an unknown resource or a negative divisor.
func (r *ResourceRef) Validate() error {
	switch r.Resource {
	case ResourceLimitsCPU, ResourceLimitsMemory, ResourceRequestsCPU, ResourceRequestsMemory:
	default:
		return fmt.Errorf("resourceFieldRef: resource %q is not one of %s, %s, %s, %s", r.Resource,
			ResourceLimitsCPU, ResourceLimitsMemory, ResourceRequestsCPU, ResourceRequestsMemory)
	}
	if r.Divisor < 0 {
		return errors.New("resourceFieldRef: negative divisor")
	}
	if r.Container != "" {
		return CheckLabel("resourceFieldRef: containerName", r.Container)
	}
	return nil
}

// KeyRef is a key of a ConfigMap or Secret in the pod's namespace.
type KeyRef struct {
	Name     string `cbor:"1,keyasint"`
	Key      string `cbor:"2,keyasint"`
	Optional bool   `cbor:"3,keyasint,omitempty"`
}

// VolumeMount mounts a pod volume into a container.
type VolumeMount struct {
	Name      string `cbor:"1,keyasint"`
	MountPath string `cbor:"2,keyasint"`
	ReadOnly  bool   `cbor:"3,keyasint,omitempty"`
	SubPath   string `cbor:"4,keyasint,omitempty"`
	// Propagation is PropagationHostToContainer or
	// PropagationBidirectional; empty is private (the API's None).
	Propagation string `cbor:"5,keyasint,omitempty" json:",omitempty"`
}

// Mount propagation modes, as the API names them.
const (
	PropagationHostToContainer = "HostToContainer"
	PropagationBidirectional   = "Bidirectional"
)

// Volume is a pod volume; exactly one source is set.
type Volume struct {
	Name      string       `cbor:"1,keyasint"`
	EmptyDir  *EmptyDir    `cbor:"2,keyasint,omitempty"`
	HostPath  *HostPath    `cbor:"3,keyasint,omitempty"`
	ConfigMap *FilesVolume `cbor:"4,keyasint,omitempty"`
	Secret    *FilesVolume `cbor:"5,keyasint,omitempty"`
	Projected *Projected   `cbor:"6,keyasint,omitempty"`
	// ReadOnly makes every mount of the volume read-only, whatever the
	// mount says (a persistentVolumeClaim volume's readOnly).
	ReadOnly bool `cbor:"7,keyasint,omitempty" json:",omitempty"`
	// FSGroupOwned gives a hostPath volume the pod's fsGroup as an
	// emptyDir gets it, unless ReadOnly: a kubelet does so for a local
	// PersistentVolume (never for a hostPath volume or hostPath
	// PersistentVolume).
	FSGroupOwned bool `cbor:"8,keyasint,omitempty" json:",omitempty"`
}

// Validate reports a volume without exactly one source.
func (v *Volume) Validate() error {
	if err := CheckLabel("volume: name", v.Name); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{v.EmptyDir != nil, v.HostPath != nil, v.ConfigMap != nil, v.Secret != nil, v.Projected != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("volume %s: %d sources, want exactly one", v.Name, n)
	}
	if v.HostPath != nil && (v.HostPath.Path == "" || len(v.HostPath.Path) > 4096) {
		return fmt.Errorf("volume %s: hostPath needs a path", v.Name)
	}
	if v.FSGroupOwned && v.HostPath == nil {
		return fmt.Errorf("volume %s: only a hostPath volume is given the fsGroup by its owner flag", v.Name)
	}
	for _, f := range []*FilesVolume{v.ConfigMap, v.Secret} {
		if f != nil {
			if err := f.Validate(); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
	}
	if p := v.Projected; p != nil {
		if len(p.Sources) == 0 || len(p.Sources) > maxItems {
			return fmt.Errorf("volume %s: projected needs 1 to %d sources", v.Name, maxItems)
		}
		for i := range p.Sources {
			if err := p.Sources[i].Validate(); err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
	}
	return nil
}

// Projected combines several sources into one directory, as the API server
// does for the default service-account volume (kube-api-access-*).
type Projected struct {
	Sources     []ProjectedSource `cbor:"1,keyasint"`
	DefaultMode int32             `cbor:"2,keyasint,omitempty"`
}

// ProjectedSource is one source of a projected volume; exactly one is set.
type ProjectedSource struct {
	ConfigMap *FilesVolume `cbor:"1,keyasint,omitempty"`
	Secret    *FilesVolume `cbor:"2,keyasint,omitempty"`
	// DownwardAPI files hold a field of the pod (see EnvSource.Field).
	DownwardAPI         []FieldFile  `cbor:"3,keyasint,omitempty"`
	ServiceAccountToken *TokenSource `cbor:"4,keyasint,omitempty"`
}

// Validate reports a source that is not exactly one kind.
func (s *ProjectedSource) Validate() error {
	n := 0
	for _, set := range []bool{s.ConfigMap != nil, s.Secret != nil, len(s.DownwardAPI) > 0, s.ServiceAccountToken != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("projected source: %d kinds, want exactly one", n)
	}
	if len(s.DownwardAPI) > maxItems {
		return errors.New("projected source: too many downward API files")
	}
	for _, f := range []*FilesVolume{s.ConfigMap, s.Secret} {
		if f != nil {
			if err := f.Validate(); err != nil {
				return fmt.Errorf("projected source: %w", err)
			}
		}
	}
	for _, f := range s.DownwardAPI {
		if err := CheckItemPath("projected source: downward API path", f.Path); err != nil {
			return err
		}
		if (f.Field == "") == (f.Resource == nil) {
			return fmt.Errorf("projected source: downward API file %s: set exactly one of a field and a resource", f.Path)
		}
		if err := checkText("projected source: downward API field", f.Field, 512, false); err != nil {
			return err
		}
		if f.Resource != nil {
			if err := f.Resource.Validate(); err != nil {
				return err
			}
			if f.Resource.Container == "" {
				return fmt.Errorf("projected source: downward API file %s: resourceFieldRef needs a containerName", f.Path)
			}
		}
	}
	if t := s.ServiceAccountToken; t != nil {
		if err := CheckItemPath("projected source: token path", t.Path); err != nil {
			return err
		}
	}
	return nil
}

// FieldFile is a downward API file: Path holds the pod field Field
// (see EnvSource; metadata.labels and metadata.annotations too, as
// KEY="value" lines) or the container resource Resource.
type FieldFile struct {
	Path     string       `cbor:"1,keyasint"`
	Field    string       `cbor:"2,keyasint"`
	Mode     int32        `cbor:"3,keyasint,omitempty"`
	Resource *ResourceRef `cbor:"4,keyasint,omitempty"`
}

// TokenSource asks for a bound service-account token at Path. The token
// itself travels apart, in the pod's PodTokens.
type TokenSource struct {
	Path              string `cbor:"1,keyasint"`
	Audience          string `cbor:"2,keyasint,omitempty"`
	ExpirationSeconds int64  `cbor:"3,keyasint,omitempty"`
}

// PodTokens are the bound service-account tokens of one pod's projected
// volumes (an Object of KindToken with the pod's UID, namespace and name).
// They travel apart from the pod so that a refresh does not resend it; the
// agent keeps them in its store like any object, so a pod restarted
// offline gets the last token it had. The Object's Version is the relay's
// to interpret (it encodes when the tokens are due for a refresh).
type PodTokens struct {
	Items []Token `cbor:"1,keyasint"`
}

// Token is the token for the serviceAccountToken source at Path of the
// projected volume Volume.
type Token struct {
	Volume string `cbor:"1,keyasint"`
	Path   string `cbor:"2,keyasint"`
	Token  string `cbor:"3,keyasint"`
	// Expires is the token's expiry, in Unix seconds, as the API server
	// stated it.
	Expires int64 `cbor:"4,keyasint"`
}

// maxTokenLen bounds one token (a JWT is a few kilobytes at most).
const maxTokenLen = 16 << 10

// Validate reports a token without a place or a value.
func (t *PodTokens) Validate() error {
	if len(t.Items) == 0 || len(t.Items) > maxItems {
		return fmt.Errorf("tokens: %d items, want 1 to %d", len(t.Items), maxItems)
	}
	for _, it := range t.Items {
		if err := CheckLabel("token: volume", it.Volume); err != nil {
			return err
		}
		if err := CheckItemPath("token: path", it.Path); err != nil {
			return err
		}
		if err := checkText("token "+it.Volume+"/"+it.Path, it.Token, maxTokenLen, true); err != nil {
			return err
		}
		if it.Expires <= 0 {
			return fmt.Errorf("token %s/%s: no expiry", it.Volume, it.Path)
		}
	}
	return nil
}

// EmptyDir is a scratch directory that lives as long as the pod.
type EmptyDir struct {
	Memory    bool  `cbor:"1,keyasint,omitempty"` // medium: Memory (tmpfs)
	SizeLimit int64 `cbor:"2,keyasint,omitempty"`
}

// HostPath is a path on the gateway.
type HostPath struct {
	Path string `cbor:"1,keyasint"`
	Type string `cbor:"2,keyasint,omitempty"`
}

// FilesVolume projects a ConfigMap or Secret as files.
type FilesVolume struct {
	Name        string      `cbor:"1,keyasint"`
	Items       []KeyToPath `cbor:"2,keyasint,omitempty"`
	DefaultMode int32       `cbor:"3,keyasint,omitempty"`
	Optional    bool        `cbor:"4,keyasint,omitempty"`
}

// Validate reports a missing name, too many items, or an item whose key
// or path could not be a file of the volume.
func (f *FilesVolume) Validate() error {
	if err := CheckSubdomain("name", f.Name); err != nil {
		return err
	}
	if len(f.Items) > maxItems {
		return fmt.Errorf("%s: %d items (limit %d)", f.Name, len(f.Items), maxItems)
	}
	for _, it := range f.Items {
		if err := CheckKey(f.Name+": item key", it.Key); err != nil {
			return err
		}
		if err := CheckItemPath(f.Name+": item "+it.Key+": path", it.Path); err != nil {
			return err
		}
	}
	return nil
}

// KeyToPath maps a key to a relative file path.
type KeyToPath struct {
	Key  string `cbor:"1,keyasint"`
	Path string `cbor:"2,keyasint"`
	Mode int32  `cbor:"3,keyasint,omitempty"`
}

// Probe is a liveness, readiness or startup probe: exactly one of Exec,
// HTTPGet and TCPPort.
type Probe struct {
	Exec                []string `cbor:"1,keyasint,omitempty"`
	HTTPGet             *HTTPGet `cbor:"2,keyasint,omitempty"`
	TCPPort             int32    `cbor:"3,keyasint,omitempty"`
	InitialDelaySeconds int32    `cbor:"4,keyasint,omitempty"`
	PeriodSeconds       int32    `cbor:"5,keyasint,omitempty"`
	TimeoutSeconds      int32    `cbor:"6,keyasint,omitempty"`
	SuccessThreshold    int32    `cbor:"7,keyasint,omitempty"`
	FailureThreshold    int32    `cbor:"8,keyasint,omitempty"`
}

// Validate reports a probe without exactly one handler.
func (p *Probe) Validate() error {
	n := 0
	for _, set := range []bool{len(p.Exec) > 0, p.HTTPGet != nil, p.TCPPort != 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("probe: %d handlers, want exactly one of exec, httpGet, tcpSocket", n)
	}
	if p.TCPPort < 0 || p.TCPPort > 65535 || (p.HTTPGet != nil && (p.HTTPGet.Port <= 0 || p.HTTPGet.Port > 65535)) {
		return errors.New("probe: port out of range")
	}
	if len(p.Exec) > maxItems || (p.HTTPGet != nil && len(p.HTTPGet.Headers) > maxItems) {
		return errors.New("probe: too many exec words or headers")
	}
	return nil
}

// HTTPGet is an HTTP probe.
type HTTPGet struct {
	Path    string      `cbor:"1,keyasint,omitempty"`
	Port    int32       `cbor:"2,keyasint"`
	Host    string      `cbor:"3,keyasint,omitempty"`
	HTTPS   bool        `cbor:"4,keyasint,omitempty"`
	Headers [][2]string `cbor:"5,keyasint,omitempty"`
}

// ConfigMap is a ConfigMap's data.
type ConfigMap struct {
	Data   map[string]string `cbor:"1,keyasint,omitempty"`
	Binary map[string][]byte `cbor:"2,keyasint,omitempty"`
}

// Validate bounds the key count; the frame size bounds the rest.
func (c *ConfigMap) Validate() error {
	if len(c.Data)+len(c.Binary) > maxElements {
		return errors.New("configmap: too many keys")
	}
	for k := range c.Data {
		if err := CheckKey("configmap: key", k); err != nil {
			return err
		}
	}
	for k := range c.Binary {
		if err := CheckKey("configmap: key", k); err != nil {
			return err
		}
	}
	return nil
}

// Secret is a Secret's data.
type Secret struct {
	Data map[string][]byte `cbor:"1,keyasint,omitempty"`
	Type string            `cbor:"2,keyasint,omitempty"`
	// PullAuths are the registry logins of a kubernetes.io/dockerconfigjson
	// or kubernetes.io/dockercfg Secret, read by the relay, for the pods
	// naming it in imagePullSecrets.
	PullAuths []PullAuth `cbor:"3,keyasint,omitempty"`
	// PullAuthError says why such a Secret's logins could not be read.
	PullAuthError string `cbor:"4,keyasint,omitempty"`
}

// Validate bounds the key count; the frame size bounds the rest.
func (s *Secret) Validate() error {
	if len(s.Data) > maxElements || len(s.PullAuths) > maxItems {
		return errors.New("secret: too many keys or registry logins")
	}
	for k := range s.Data {
		if err := CheckKey("secret: key", k); err != nil {
			return err
		}
	}
	for _, a := range s.PullAuths {
		if err := checkText("secret: pull auth registry", a.Registry, 512, true); err != nil {
			return err
		}
	}
	return checkText("secret: pull auth error", s.PullAuthError, maxTextLen, false)
}

// PullAuth is one registry login of a pull secret: Registry is the key of
// its Docker config ("registry.example.com:5000", "https://index.docker.io/v1/").
type PullAuth struct {
	Registry string `cbor:"1,keyasint"`
	Username string `cbor:"2,keyasint,omitempty"`
	Password string `cbor:"3,keyasint,omitempty"`
}

// String keeps the password out of logs.
func (a PullAuth) String() string {
	return a.Registry + " (user " + a.Username + ", password redacted)"
}

// GoString keeps the password out of logs written with %#v.
func (a PullAuth) GoString() string { return "wire.PullAuth{" + a.String() + "}" }
