package pods

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"outpost.dev/wire"
)

// UnsupportedError says which field of a pod has no place on an edge node.
// Path is the field's JSON path in the pod, as kubectl explain spells it.
type UnsupportedError struct {
	Path string
	// Hint says what to do instead; may be empty.
	Hint string
}

func (e *UnsupportedError) Error() string {
	s := e.Path + " is not supported on edge nodes"
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

func unsupported(path, hint string) error { return &UnsupportedError{Path: path, Hint: hint} }

// envFields are the downward API field paths the agent resolves in env
// (see wire.EnvSource), besides metadata.labels['KEY'] and
// metadata.annotations['KEY'].
var envFields = map[string]bool{
	"metadata.name": true, "metadata.namespace": true, "metadata.uid": true,
	"spec.nodeName": true, "spec.serviceAccountName": true,
	"status.podIP": true, "status.podIPs": true, "status.hostIP": true, "status.hostIPs": true,
}

// fileFields are the field paths of downwardAPI volume files, as the API
// server allows them, besides the subscripted labels and annotations.
var fileFields = map[string]bool{
	"metadata.name": true, "metadata.namespace": true, "metadata.uid": true,
	"metadata.labels": true, "metadata.annotations": true,
}

// subscripted returns "labels" or "annotations" for
// metadata.labels['KEY'] or metadata.annotations['KEY'], else "".
func subscripted(path string) string {
	for _, m := range []string{"labels", "annotations"} {
		if p, ok := strings.CutPrefix(path, "metadata."+m+"['"); ok && strings.HasSuffix(p, "']") && len(p) > 2 {
			return m
		}
	}
	return ""
}

// fieldMeta says which of the pod's labels and annotations a field path
// reads (into meta).
func fieldMeta(path string, meta *podMeta) {
	switch {
	case path == "metadata.labels" || subscripted(path) == "labels":
		meta.labels = true
	case path == "metadata.annotations" || subscripted(path) == "annotations":
		meta.annotations = true
	}
}

// podMeta records whether a pod's downward API reads its labels or
// annotations, which then travel with it.
type podMeta struct{ labels, annotations bool }

// Translate turns a pod as the API server returns it into the agent's pod
// type. It fails on the first field the agent cannot honour, with an
// *UnsupportedError naming it. Fields that only matter to the scheduler or
// the API server (affinity, tolerations, priority, schedulerName,
// nodeSelector, readiness gates...) and the defaults the API server sets on
// every pod are accepted and not carried. claims are the pod's
// persistentVolumeClaim and ephemeral volumes resolved by ResolveClaims;
// such a volume missing from them is refused.
func Translate(p *corev1.Pod, claims Claims) (*wire.Pod, error) {
	s := &p.Spec
	switch s.DNSPolicy {
	case "", corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, corev1.DNSDefault, corev1.DNSNone:
	default:
		return nil, unsupported("spec.dnsPolicy: "+string(s.DNSPolicy), "use ClusterFirst, ClusterFirstWithHostNet, Default or None")
	}
	if s.RuntimeClassName != nil && *s.RuntimeClassName != "" {
		return nil, unsupported("spec.runtimeClassName", "edge nodes run one runtime (runc)")
	}
	if s.OS != nil && s.OS.Name != corev1.Linux {
		return nil, unsupported("spec.os.name: "+string(s.OS.Name), "edge nodes run Linux")
	}
	if s.HostUsers != nil && !*s.HostUsers {
		return nil, unsupported("spec.hostUsers", "user namespaces are not available; remove the field")
	}
	if len(s.ResourceClaims) > 0 {
		return nil, unsupported("spec.resourceClaims", "")
	}
	out := &wire.Pod{
		RestartPolicy:      string(s.RestartPolicy),
		HostNetwork:        s.HostNetwork,
		ServiceAccountName: s.ServiceAccountName,
		Hostname:           s.Hostname,
		Subdomain:          s.Subdomain,
		SetHostnameAsFQDN:  isTrue(s.SetHostnameAsFQDN),
	}
	if s.DNSPolicy != corev1.DNSClusterFirst {
		out.DNSPolicy = string(s.DNSPolicy) // empty is ClusterFirst
	}
	if c := s.DNSConfig; c != nil {
		out.DNSConfig = &wire.DNSConfig{Nameservers: c.Nameservers, Searches: c.Searches}
		for _, o := range c.Options {
			out.DNSConfig.Options = append(out.DNSConfig.Options, wire.DNSOption{Name: o.Name, Value: o.Value})
		}
	}
	for _, a := range s.HostAliases {
		out.HostAliases = append(out.HostAliases, wire.HostAlias{IP: a.IP, Hostnames: a.Hostnames})
	}
	if s.Resources != nil {
		if len(s.Resources.Claims) > 0 {
			return nil, unsupported("spec.resources.claims", "")
		}
		var r wire.PodResources
		if err := translateResources("spec.resources", s.Resources, &r); err != nil {
			return nil, err
		}
		if r != (wire.PodResources{}) {
			out.Resources = &r
		}
	}
	if s.ActiveDeadlineSeconds != nil {
		out.ActiveDeadlineSeconds = *s.ActiveDeadlineSeconds
	}
	var ns wire.PodNamespaces
	switch {
	case s.HostPID:
		ns.PID = wire.PIDHost
	case isTrue(s.ShareProcessNamespace):
		ns.PID = wire.PIDPod
	}
	ns.HostIPC = s.HostIPC
	if ns != (wire.PodNamespaces{}) {
		out.Namespaces = &ns
	}
	if ph := p.Status.Phase; ph == corev1.PodSucceeded || ph == corev1.PodFailed {
		out.Finished = string(ph)
	}
	if out.RestartPolicy == "" {
		out.RestartPolicy = string(corev1.RestartPolicyAlways)
	}
	if s.HostnameOverride != nil && *s.HostnameOverride != "" {
		out.Hostname = *s.HostnameOverride
	}
	if s.TerminationGracePeriodSeconds != nil {
		out.TerminationGracePeriodSeconds = *s.TerminationGracePeriodSeconds
	}
	if p.DeletionTimestamp != nil {
		out.Deleting = true
		if p.DeletionGracePeriodSeconds != nil {
			out.DeletionGracePeriodSeconds = *p.DeletionGracePeriodSeconds
		}
	}
	for _, r := range s.ImagePullSecrets {
		if r.Name != "" {
			out.ImagePullSecrets = append(out.ImagePullSecrets, r.Name)
		}
	}

	var pod podSecurity
	if sc := s.SecurityContext; sc != nil {
		switch {
		case sc.SELinuxOptions != nil:
			return nil, unsupported("spec.securityContext.seLinuxOptions", "")
		case sc.WindowsOptions != nil:
			return nil, unsupported("spec.securityContext.windowsOptions", "")
		case sc.SupplementalGroupsPolicy != nil && *sc.SupplementalGroupsPolicy != corev1.SupplementalGroupsPolicyMerge &&
			*sc.SupplementalGroupsPolicy != corev1.SupplementalGroupsPolicyStrict:
			return nil, unsupported("spec.securityContext.supplementalGroupsPolicy: "+string(*sc.SupplementalGroupsPolicy), "use Merge or Strict")
		case sc.SELinuxChangePolicy != nil:
			return nil, unsupported("spec.securityContext.seLinuxChangePolicy", "")
		case sc.AppArmorProfile != nil && sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined:
			return nil, unsupported("spec.securityContext.appArmorProfile", appArmorReason)
		}
		pod = podSecurity{user: sc.RunAsUser, group: sc.RunAsGroup, nonRoot: isTrue(sc.RunAsNonRoot), seccomp: sc.SeccompProfile}
		out.SupplementalGroups, out.FSGroup = sc.SupplementalGroups, sc.FSGroup
		if sc.FSGroupChangePolicy != nil {
			out.FSGroupChangePolicy = string(*sc.FSGroupChangePolicy)
		}
		// The node decides which it allows (its safe set and its config).
		for _, sy := range sc.Sysctls {
			out.Sysctls = append(out.Sysctls, wire.Sysctl{Name: sy.Name, Value: sy.Value})
		}
	}

	var meta podMeta
	volumes := map[string]bool{}
	if len(s.Volumes) > 0 {
		out.Volumes = make([]wire.Volume, 0, len(s.Volumes))
	}
	for i := range s.Volumes {
		v, err := translateVolume(fmt.Sprintf("spec.volumes[%d]", i), &s.Volumes[i], claims, &meta)
		if err != nil {
			return nil, err
		}
		volumes[v.Name] = true
		out.Volumes = append(out.Volumes, v)
	}
	for i := range s.InitContainers {
		c := &s.InitContainers[i]
		path := fmt.Sprintf("spec.initContainers[%d]", i)
		wc, err := translateContainer(path, c, s.HostNetwork, volumes, &pod, &meta)
		if err != nil {
			return nil, err
		}
		if c.RestartPolicy != nil {
			// The API server admits Always only: a sidecar.
			if *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				return nil, unsupported(path+".restartPolicy: "+string(*c.RestartPolicy), "use Always (a sidecar) or leave it unset")
			}
			wc.Sidecar = true
		}
		out.InitContainers = append(out.InitContainers, wc)
	}
	for i := range s.Containers {
		path := fmt.Sprintf("spec.containers[%d]", i)
		if s.Containers[i].RestartPolicy != nil {
			return nil, unsupported(path+".restartPolicy", "use spec.restartPolicy")
		}
		wc, err := translateContainer(path, &s.Containers[i], s.HostNetwork, volumes, &pod, &meta)
		if err != nil {
			return nil, err
		}
		out.Containers = append(out.Containers, wc)
	}
	for i := range s.EphemeralContainers {
		e, err := translateEphemeral(fmt.Sprintf("spec.ephemeralContainers[%d]", i), &s.EphemeralContainers[i], s.HostNetwork, volumes, &pod, &meta)
		if err != nil {
			return nil, err
		}
		out.EphemeralContainers = append(out.EphemeralContainers, e)
	}
	if meta.labels {
		out.Labels = p.Labels
	}
	if meta.annotations {
		out.Annotations = p.Annotations
	}
	if err := checkResourceRefs(out); err != nil {
		return nil, err
	}
	if err := out.Validate(); err != nil {
		return nil, unsupported("spec", err.Error())
	}
	return out, nil
}

// translateResources reads cpu and memory limits and requests into r;
// other resources are refused (edge nodes enforce cpu and memory only).
func translateResources(path string, rr *corev1.ResourceRequirements, r *wire.PodResources) error {
	for name, q := range rr.Limits {
		switch name {
		case corev1.ResourceCPU:
			r.CPUMillis = q.MilliValue()
		case corev1.ResourceMemory:
			r.MemoryBytes = q.Value()
		default:
			return unsupported(path+".limits."+string(name), "edge nodes enforce cpu and memory limits only")
		}
	}
	for name, q := range rr.Requests {
		switch name {
		case corev1.ResourceCPU:
			r.RequestCPUMillis = q.MilliValue()
		case corev1.ResourceMemory:
			r.RequestMemoryBytes = q.Value()
		default:
			// Other requests only matter to the scheduler.
		}
	}
	return nil
}

// checkResourceRefs refuses a resourceFieldRef naming a container the
// pod does not have (an ephemeral container's names a regular or init one).
func checkResourceRefs(p *wire.Pod) error {
	names := map[string]bool{}
	for _, cs := range [][]wire.Container{p.InitContainers, p.Containers} {
		for i := range cs {
			names[cs[i].Name] = true
		}
	}
	check := func(what string, r *wire.ResourceRef) error {
		if r != nil && r.Container != "" && !names[r.Container] {
			return unsupported(what+".resourceFieldRef.containerName: "+r.Container, "no container of that name")
		}
		return nil
	}
	ephemeral := make([]wire.Container, len(p.EphemeralContainers))
	for i := range p.EphemeralContainers {
		ephemeral[i] = p.EphemeralContainers[i].Container
	}
	for _, cs := range [][]wire.Container{p.InitContainers, p.Containers, ephemeral} {
		for i := range cs {
			for _, e := range cs[i].Env {
				if e.From != nil {
					if err := check("env "+e.Name, e.From.Resource); err != nil {
						return err
					}
				}
			}
		}
	}
	for _, v := range p.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			for _, f := range src.DownwardAPI {
				if err := check("volume "+v.Name+" file "+f.Path, f.Resource); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// translateResourceRef turns a resourceFieldRef into the wire's, the
// divisor in millicores (cpu) or bytes (memory).
func translateResourceRef(path string, r *corev1.ResourceFieldSelector) (*wire.ResourceRef, error) {
	out := &wire.ResourceRef{Container: r.ContainerName, Resource: r.Resource}
	switch r.Resource {
	case wire.ResourceLimitsCPU, wire.ResourceRequestsCPU:
		out.Divisor = r.Divisor.MilliValue()
	case wire.ResourceLimitsMemory, wire.ResourceRequestsMemory:
		out.Divisor = r.Divisor.Value()
	default:
		return nil, unsupported(path+".resource: "+r.Resource, "edge nodes expose limits.cpu, limits.memory, requests.cpu and requests.memory")
	}
	if out.Divisor < 0 {
		return nil, unsupported(path+".divisor", "a divisor is positive")
	}
	return out, nil
}

// podSecurity is the pod's securityContext fields that are defaults for
// its containers.
type podSecurity struct {
	user, group *int64
	nonRoot     bool
	seccomp     *corev1.SeccompProfile
}

// translateSeccomp turns a seccompProfile (nil: not set) into the wire's.
func translateSeccomp(path string, p *corev1.SeccompProfile) (*wire.SeccompProfile, error) {
	if p == nil {
		return nil, nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault, corev1.SeccompProfileTypeUnconfined:
		return &wire.SeccompProfile{Type: string(p.Type)}, nil
	case corev1.SeccompProfileTypeLocalhost:
		if p.LocalhostProfile == nil || *p.LocalhostProfile == "" {
			return nil, unsupported(path+".localhostProfile (empty)", "name a profile file in the node's seccomp profile directory")
		}
		return &wire.SeccompProfile{Type: string(p.Type), LocalhostProfile: *p.LocalhostProfile}, nil
	}
	return nil, unsupported(path+".type: "+string(p.Type), "use RuntimeDefault, Unconfined or Localhost")
}

func translateContainer(path string, c *corev1.Container, hostNetwork bool, volumes map[string]bool, pod *podSecurity, meta *podMeta) (wire.Container, error) {
	out := wire.Container{
		Name:            c.Name,
		Image:           c.Image,
		Command:         c.Command,
		Args:            c.Args,
		WorkingDir:      c.WorkingDir,
		ImagePullPolicy: string(c.ImagePullPolicy),
		RunAsUser:       pod.user,
		RunAsGroup:      pod.group,
		Stdin:           c.Stdin,
		StdinOnce:       c.StdinOnce,
		TTY:             c.TTY,
	}
	switch {
	case len(c.VolumeDevices) > 0:
		return out, unsupported(path+".volumeDevices", "use a hostPath volume for the device")
	case len(c.RestartPolicyRules) > 0:
		return out, unsupported(path+".restartPolicyRules", "")
	}
	for i, ef := range c.EnvFrom {
		ep := fmt.Sprintf("%s.envFrom[%d]", path, i)
		we := wire.EnvFromSource{Prefix: ef.Prefix}
		switch {
		case ef.ConfigMapRef != nil:
			we.ConfigMap, we.Optional = ef.ConfigMapRef.Name, isTrue(ef.ConfigMapRef.Optional)
		case ef.SecretRef != nil:
			we.Secret, we.Optional = ef.SecretRef.Name, isTrue(ef.SecretRef.Optional)
		default:
			return out, unsupported(ep, "set configMapRef or secretRef")
		}
		if we.ConfigMap == "" && we.Secret == "" {
			return out, unsupported(ep+".name (empty)", "name a ConfigMap or Secret of the pod's namespace")
		}
		out.EnvFrom = append(out.EnvFrom, we)
	}
	for i, p := range c.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, i)
		if p.HostPort == 0 {
			if p.HostIP != "" {
				return out, unsupported(pp+".hostIP", "hostIP needs a hostPort")
			}
			continue
		}
		if hostNetwork {
			// The API server sets hostPort to containerPort: that is what
			// the container does anyway.
			if p.HostPort != p.ContainerPort || p.HostIP != "" {
				return out, unsupported(pp+".hostPort", "with hostNetwork the container listens on the node itself: set hostPort to containerPort, without hostIP")
			}
			continue
		}
		// Published through the CNI portmap plugin.
		out.Ports = append(out.Ports, wire.ContainerPort{ContainerPort: p.ContainerPort, HostPort: p.HostPort, Protocol: string(p.Protocol), HostIP: p.HostIP})
	}

	for i := range c.Env {
		e := &c.Env[i]
		ep := fmt.Sprintf("%s.env[%d]", path, i)
		we := wire.EnvVar{Name: e.Name, Value: e.Value}
		if f := e.ValueFrom; f != nil {
			ep += ".valueFrom"
			switch {
			case f.ConfigMapKeyRef != nil:
				r := f.ConfigMapKeyRef
				we.From = &wire.EnvSource{ConfigMap: &wire.KeyRef{Name: r.Name, Key: r.Key, Optional: isTrue(r.Optional)}}
			case f.SecretKeyRef != nil:
				r := f.SecretKeyRef
				we.From = &wire.EnvSource{Secret: &wire.KeyRef{Name: r.Name, Key: r.Key, Optional: isTrue(r.Optional)}}
			case f.FieldRef != nil:
				fp := f.FieldRef.FieldPath
				if !envFields[fp] && subscripted(fp) == "" {
					return out, unsupported(ep+".fieldRef.fieldPath: "+fp, "supported: "+fieldList(envFields)+
						", metadata.labels['KEY'], metadata.annotations['KEY']")
				}
				fieldMeta(fp, meta)
				we.From = &wire.EnvSource{Field: fp}
			case f.ResourceFieldRef != nil:
				r, err := translateResourceRef(ep+".resourceFieldRef", f.ResourceFieldRef)
				if err != nil {
					return out, err
				}
				we.From = &wire.EnvSource{Resource: r}
			case f.FileKeyRef != nil:
				return out, unsupported(ep+".fileKeyRef", "")
			default:
				return out, unsupported(ep, "set one of configMapKeyRef, secretKeyRef or fieldRef")
			}
		}
		out.Env = append(out.Env, we)
	}

	if len(c.Resources.Claims) > 0 {
		return out, unsupported(path+".resources.claims", "")
	}
	var res wire.PodResources
	if err := translateResources(path+".resources", &c.Resources, &res); err != nil {
		return out, err
	}
	out.CPUMillis, out.MemoryBytes = res.CPUMillis, res.MemoryBytes
	out.RequestCPUMillis, out.RequestMemoryBytes = res.RequestCPUMillis, res.RequestMemoryBytes

	for i, m := range c.VolumeMounts {
		mp := fmt.Sprintf("%s.volumeMounts[%d]", path, i)
		switch {
		case m.SubPathExpr != "":
			return out, unsupported(mp+".subPathExpr", "use subPath")
		case m.RecursiveReadOnly != nil && *m.RecursiveReadOnly != corev1.RecursiveReadOnlyDisabled:
			return out, unsupported(mp+".recursiveReadOnly", "")
		case len(m.BindMountOptions) > 0:
			return out, unsupported(mp+".bindMountOptions", "")
		case !volumes[m.Name]:
			return out, unsupported(mp+".name: "+m.Name, "no volume of that name")
		}
		wm := wire.VolumeMount{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly, SubPath: m.SubPath}
		if m.MountPropagation != nil {
			switch *m.MountPropagation {
			case corev1.MountPropagationNone:
			case corev1.MountPropagationHostToContainer:
				wm.Propagation = wire.PropagationHostToContainer
			case corev1.MountPropagationBidirectional:
				wm.Propagation = wire.PropagationBidirectional
			default:
				return out, unsupported(mp+".mountPropagation", "unknown mode "+string(*m.MountPropagation))
			}
		}
		out.Mounts = append(out.Mounts, wm)
	}

	var err error
	if l := c.Lifecycle; l != nil {
		if l.StopSignal != nil {
			return out, unsupported(path+".lifecycle.stopSignal", "edge nodes stop containers with SIGTERM")
		}
		if out.PostStart, err = translateHandler(path+".lifecycle.postStart", l.PostStart, c.Ports); err != nil {
			return out, err
		}
		if out.PreStop, err = translateHandler(path+".lifecycle.preStop", l.PreStop, c.Ports); err != nil {
			return out, err
		}
	}
	if out.LivenessProbe, err = translateProbe(path+".livenessProbe", c.LivenessProbe, c.Ports); err != nil {
		return out, err
	}
	if out.ReadinessProbe, err = translateProbe(path+".readinessProbe", c.ReadinessProbe, c.Ports); err != nil {
		return out, err
	}
	if out.StartupProbe, err = translateProbe(path+".startupProbe", c.StartupProbe, c.Ports); err != nil {
		return out, err
	}

	nonRoot := pod.nonRoot
	// The pod's seccompProfile, unless the container sets its own.
	if out.Seccomp, err = translateSeccomp("spec.securityContext.seccompProfile", pod.seccomp); err != nil {
		return out, err
	}
	if sc := c.SecurityContext; sc != nil {
		sp := path + ".securityContext"
		switch {
		case sc.SELinuxOptions != nil:
			return out, unsupported(sp+".seLinuxOptions", "")
		case sc.WindowsOptions != nil:
			return out, unsupported(sp+".windowsOptions", "")
		case sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount && *sc.ProcMount != corev1.UnmaskedProcMount:
			return out, unsupported(sp+".procMount: "+string(*sc.ProcMount), "use Default or Unmasked")
		case sc.AppArmorProfile != nil && sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined:
			return out, unsupported(sp+".appArmorProfile", appArmorReason)
		}
		if sc.SeccompProfile != nil {
			if out.Seccomp, err = translateSeccomp(sp+".seccompProfile", sc.SeccompProfile); err != nil {
				return out, err
			}
		}
		out.Privileged = isTrue(sc.Privileged)
		// As the kubelet: no_new_privs only when explicitly false.
		out.NoNewPrivileges = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		out.ReadOnlyRootFilesystem = isTrue(sc.ReadOnlyRootFilesystem)
		out.ProcUnmasked = sc.ProcMount != nil && *sc.ProcMount == corev1.UnmaskedProcMount
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				out.CapAdd = append(out.CapAdd, strings.TrimPrefix(string(c), "CAP_"))
			}
			for _, c := range sc.Capabilities.Drop {
				out.CapDrop = append(out.CapDrop, strings.TrimPrefix(string(c), "CAP_"))
			}
		}
		if sc.RunAsUser != nil {
			out.RunAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			out.RunAsGroup = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
	}
	// The agent checks it against the image's user, as a kubelet does.
	out.RunAsNonRoot = nonRoot
	return out, nil
}

// translateEphemeral turns an ephemeral container (kubectl debug) into the
// wire's. What the API server refuses on one (ports, probes, resources,
// lifecycle hooks, restartPolicy) is refused here too, should it get by.
func translateEphemeral(path string, e *corev1.EphemeralContainer, hostNetwork bool, volumes map[string]bool, pod *podSecurity, meta *podMeta) (wire.EphemeralContainer, error) {
	c := (*corev1.Container)(&e.EphemeralContainerCommon)
	out := wire.EphemeralContainer{Target: e.TargetContainerName}
	switch {
	case len(c.Ports) > 0:
		return out, unsupported(path+".ports", "ephemeral containers have no ports")
	case c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil:
		return out, unsupported(path+" probes", "ephemeral containers have no probes")
	case c.Lifecycle != nil:
		return out, unsupported(path+".lifecycle", "ephemeral containers have no lifecycle hooks")
	case len(c.Resources.Limits) > 0 || len(c.Resources.Requests) > 0 || len(c.Resources.Claims) > 0 || len(c.ResizePolicy) > 0:
		return out, unsupported(path+".resources", "ephemeral containers run within the pod's resources")
	case c.RestartPolicy != nil || len(c.RestartPolicyRules) > 0:
		return out, unsupported(path+".restartPolicy", "ephemeral containers are never restarted")
	}
	wc, err := translateContainer(path, c, hostNetwork, volumes, pod, meta)
	out.Container = wc
	return out, err
}

// translateHandler turns a lifecycle hook (nil: not set) into the wire's.
// A named httpGet port is looked up in the container's ports, as the
// kubelet does when it runs the hook.
func translateHandler(path string, h *corev1.LifecycleHandler, ports []corev1.ContainerPort) (*wire.Handler, error) {
	if h == nil {
		return nil, nil
	}
	switch {
	case h.Exec != nil:
		if len(h.Exec.Command) == 0 {
			return nil, unsupported(path+".exec.command (empty)", "")
		}
		return &wire.Handler{Exec: h.Exec.Command}, nil
	case h.HTTPGet != nil:
		g, err := translateHTTPGet(path+".httpGet", h.HTTPGet, ports)
		if err != nil {
			return nil, err
		}
		return &wire.Handler{HTTPGet: g}, nil
	case h.Sleep != nil:
		if h.Sleep.Seconds <= 0 {
			// A zero sleep does nothing; the wire has no way to say it.
			return nil, nil
		}
		return &wire.Handler{SleepSeconds: h.Sleep.Seconds}, nil
	case h.TCPSocket != nil:
		return nil, unsupported(path+".tcpSocket", "a kubelet does not run tcpSocket hooks either; use exec, httpGet or sleep")
	}
	return nil, unsupported(path, "set exec, httpGet or sleep")
}

// translateHTTPGet is an httpGet action of a probe or a hook.
func translateHTTPGet(path string, h *corev1.HTTPGetAction, ports []corev1.ContainerPort) (*wire.HTTPGet, error) {
	if h.Protocol != nil {
		return nil, unsupported(path+".protocol", "")
	}
	port, err := resolvePort(path+".port", h.Port.IntValue(), h.Port.String(), h.Port.Type == intstr.String, ports)
	if err != nil {
		return nil, err
	}
	out := &wire.HTTPGet{Path: h.Path, Port: port, Host: h.Host, HTTPS: h.Scheme == corev1.URISchemeHTTPS}
	for _, hd := range h.HTTPHeaders {
		out.Headers = append(out.Headers, [2]string{hd.Name, hd.Value})
	}
	return out, nil
}

func translateProbe(path string, p *corev1.Probe, ports []corev1.ContainerPort) (*wire.Probe, error) {
	if p == nil {
		return nil, nil
	}
	out := &wire.Probe{
		InitialDelaySeconds: p.InitialDelaySeconds,
		PeriodSeconds:       p.PeriodSeconds,
		TimeoutSeconds:      p.TimeoutSeconds,
		SuccessThreshold:    p.SuccessThreshold,
		FailureThreshold:    p.FailureThreshold,
	}
	if p.TerminationGracePeriodSeconds != nil {
		return nil, unsupported(path+".terminationGracePeriodSeconds", "use spec.terminationGracePeriodSeconds")
	}
	switch {
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return nil, unsupported(path+".exec.command (empty)", "")
		}
		out.Exec = p.Exec.Command
	case p.HTTPGet != nil:
		g, err := translateHTTPGet(path+".httpGet", p.HTTPGet, ports)
		if err != nil {
			return nil, err
		}
		out.HTTPGet = g
	case p.TCPSocket != nil:
		if p.TCPSocket.Host != "" {
			return nil, unsupported(path+".tcpSocket.host", "")
		}
		port, err := resolvePort(path+".tcpSocket.port", p.TCPSocket.Port.IntValue(), p.TCPSocket.Port.String(), p.TCPSocket.Port.Type == intstr.String, ports)
		if err != nil {
			return nil, err
		}
		out.TCPPort = port
	case p.GRPC != nil:
		return nil, unsupported(path+".grpc", "use exec, httpGet or tcpSocket")
	default:
		return nil, unsupported(path, "set exec, httpGet or tcpSocket")
	}
	return out, nil
}

// resolvePort returns a probe's port number, looking a named port up in the
// container's ports as the kubelet does.
func resolvePort(path string, n int, name string, named bool, ports []corev1.ContainerPort) (int32, error) {
	if !named {
		if n <= 0 || n > 65535 {
			return 0, unsupported(path+": "+strconv.Itoa(n), "a port is 1 to 65535")
		}
		return int32(n), nil
	}
	for _, p := range ports {
		if p.Name == name {
			return p.ContainerPort, nil
		}
	}
	return 0, unsupported(path+": "+name, "no container port of that name")
}

func translateVolume(path string, v *corev1.Volume, claims Claims, meta *podMeta) (wire.Volume, error) {
	out := wire.Volume{Name: v.Name}
	vs := &v.VolumeSource
	switch {
	case vs.EmptyDir != nil:
		e := vs.EmptyDir
		switch e.Medium {
		case corev1.StorageMediumDefault:
		case corev1.StorageMediumMemory:
			out.EmptyDir = &wire.EmptyDir{Memory: true}
		default:
			return out, unsupported(path+".emptyDir.medium: "+string(e.Medium), "use \"\" or Memory")
		}
		if e.Mode != nil {
			return out, unsupported(path+".emptyDir.mode", "")
		}
		if out.EmptyDir == nil {
			out.EmptyDir = &wire.EmptyDir{}
		}
		if e.SizeLimit != nil {
			out.EmptyDir.SizeLimit = e.SizeLimit.Value()
		}
	case vs.PersistentVolumeClaim != nil || vs.Ephemeral != nil:
		c, ok := claims[v.Name]
		if !ok {
			return out, unsupported(path+"."+volumeSourceName(vs), "its claim was not resolved to a PersistentVolume")
		}
		// The directory of a local or hostPath PersistentVolume, mounted
		// as a hostPath volume, with its checks.
		out.HostPath = &wire.HostPath{Path: c.Path, Type: c.Type}
		out.ReadOnly, out.FSGroupOwned = c.ReadOnly, c.Local
	case vs.HostPath != nil:
		out.HostPath = &wire.HostPath{Path: vs.HostPath.Path}
		if vs.HostPath.Type != nil {
			out.HostPath.Type = string(*vs.HostPath.Type)
		}
	case vs.ConfigMap != nil:
		c := vs.ConfigMap
		if c.DefaultUser != nil {
			return out, unsupported(path+".configMap.defaultUser", "")
		}
		items := translateItems(c.Items)
		out.ConfigMap = &wire.FilesVolume{Name: c.Name, Items: items, DefaultMode: deref32(c.DefaultMode), Optional: isTrue(c.Optional)}
	case vs.Secret != nil:
		c := vs.Secret
		if c.DefaultUser != nil {
			return out, unsupported(path+".secret.defaultUser", "")
		}
		items := translateItems(c.Items)
		out.Secret = &wire.FilesVolume{Name: c.SecretName, Items: items, DefaultMode: deref32(c.DefaultMode), Optional: isTrue(c.Optional)}
	case vs.DownwardAPI != nil:
		files, err := translateFieldFiles(path+".downwardAPI", vs.DownwardAPI.Items, meta)
		if err != nil {
			return out, err
		}
		out.Projected = &wire.Projected{Sources: []wire.ProjectedSource{{DownwardAPI: files}}, DefaultMode: deref32(vs.DownwardAPI.DefaultMode)}
	case vs.Projected != nil:
		pr := vs.Projected
		if pr.DefaultUser != nil {
			return out, unsupported(path+".projected.defaultUser", "")
		}
		out.Projected = &wire.Projected{DefaultMode: deref32(pr.DefaultMode)}
		for i := range pr.Sources {
			src := &pr.Sources[i]
			sp := fmt.Sprintf("%s.projected.sources[%d]", path, i)
			var ws wire.ProjectedSource
			switch {
			case src.ConfigMap != nil:
				items := translateItems(src.ConfigMap.Items)
				ws.ConfigMap = &wire.FilesVolume{Name: src.ConfigMap.Name, Items: items, Optional: isTrue(src.ConfigMap.Optional)}
			case src.Secret != nil:
				items := translateItems(src.Secret.Items)
				ws.Secret = &wire.FilesVolume{Name: src.Secret.Name, Items: items, Optional: isTrue(src.Secret.Optional)}
			case src.DownwardAPI != nil:
				files, err := translateFieldFiles(sp+".downwardAPI", src.DownwardAPI.Items, meta)
				if err != nil {
					return out, err
				}
				ws.DownwardAPI = files
			case src.ServiceAccountToken != nil:
				t := src.ServiceAccountToken
				if t.User != nil {
					return out, unsupported(sp+".serviceAccountToken.user", "")
				}
				ws.ServiceAccountToken = &wire.TokenSource{Path: t.Path, Audience: t.Audience}
				if t.ExpirationSeconds != nil {
					ws.ServiceAccountToken.ExpirationSeconds = *t.ExpirationSeconds
				}
			case src.ClusterTrustBundle != nil:
				return out, unsupported(sp+".clusterTrustBundle", "")
			case src.PodCertificate != nil:
				return out, unsupported(sp+".podCertificate", "")
			default:
				return out, unsupported(sp, "set configMap, secret, downwardAPI or serviceAccountToken")
			}
			out.Projected.Sources = append(out.Projected.Sources, ws)
		}
	default:
		return out, unsupported(path+"."+volumeSourceName(vs), "edge nodes support emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim and ephemeral volumes (local and hostPath PersistentVolumes)")
	}
	if err := out.Validate(); err != nil {
		return out, unsupported(path, err.Error())
	}
	return out, nil
}

// appArmorReason says why AppArmor profiles other than Unconfined are
// refused: the agent loads no AppArmor profile (a kubelet node hands
// them to containerd's CRI, which loads its default one), and on a
// gateway whose kernel has no AppArmor a kubelet would reject the pod.
const appArmorReason = "the edge agent does not load AppArmor profiles; use Unconfined or leave the field unset (seccomp's RuntimeDefault is supported)"

// volumeSourceName names the source a volume uses, as its JSON field.
func volumeSourceName(vs *corev1.VolumeSource) string {
	for _, s := range []struct {
		name string
		set  bool
	}{
		{"persistentVolumeClaim", vs.PersistentVolumeClaim != nil},
		{"ephemeral", vs.Ephemeral != nil},
		{"csi", vs.CSI != nil},
		{"image", vs.Image != nil},
		{"nfs", vs.NFS != nil},
		{"iscsi", vs.ISCSI != nil},
		{"gitRepo", vs.GitRepo != nil},
		{"fc", vs.FC != nil},
		{"cephfs", vs.CephFS != nil},
		{"rbd", vs.RBD != nil},
		{"flexVolume", vs.FlexVolume != nil},
		{"glusterfs", vs.Glusterfs != nil},
		{"gcePersistentDisk", vs.GCEPersistentDisk != nil},
		{"awsElasticBlockStore", vs.AWSElasticBlockStore != nil},
		{"azureDisk", vs.AzureDisk != nil},
		{"azureFile", vs.AzureFile != nil},
		{"cinder", vs.Cinder != nil},
		{"vsphereVolume", vs.VsphereVolume != nil},
		{"portworxVolume", vs.PortworxVolume != nil},
		{"scaleIO", vs.ScaleIO != nil},
		{"storageos", vs.StorageOS != nil},
		{"quobyte", vs.Quobyte != nil},
		{"flocker", vs.Flocker != nil},
		{"photonPersistentDisk", vs.PhotonPersistentDisk != nil},
	} {
		if s.set {
			return s.name
		}
	}
	return "(unknown source)"
}

func translateItems(items []corev1.KeyToPath) []wire.KeyToPath {
	var out []wire.KeyToPath
	for _, it := range items {
		out = append(out, wire.KeyToPath{Key: it.Key, Path: it.Path, Mode: deref32(it.Mode)})
	}
	return out
}

func translateFieldFiles(path string, items []corev1.DownwardAPIVolumeFile, meta *podMeta) ([]wire.FieldFile, error) {
	var out []wire.FieldFile
	for i, it := range items {
		ip := fmt.Sprintf("%s.items[%d]", path, i)
		f := wire.FieldFile{Path: it.Path, Mode: deref32(it.Mode)}
		switch {
		case it.User != nil:
			return nil, unsupported(ip+".user", "")
		case it.ResourceFieldRef != nil:
			r, err := translateResourceRef(ip+".resourceFieldRef", it.ResourceFieldRef)
			if err != nil {
				return nil, err
			}
			if r.Container == "" {
				return nil, unsupported(ip+".resourceFieldRef.containerName (empty)", "a downwardAPI volume file names its container")
			}
			f.Resource = r
		case it.FieldRef == nil:
			return nil, unsupported(ip, "set fieldRef or resourceFieldRef")
		case !fileFields[it.FieldRef.FieldPath] && subscripted(it.FieldRef.FieldPath) == "":
			return nil, unsupported(ip+".fieldRef.fieldPath: "+it.FieldRef.FieldPath, "supported: "+fieldList(fileFields)+
				", metadata.labels['KEY'], metadata.annotations['KEY']")
		default:
			f.Field = it.FieldRef.FieldPath
			fieldMeta(f.Field, meta)
		}
		out = append(out, f)
	}
	return out, nil
}

func fieldList(fields map[string]bool) string {
	l := make([]string, 0, len(fields))
	for f := range fields {
		l = append(l, f)
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

func isTrue(b *bool) bool { return b != nil && *b }

func deref32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// ConfigMapObject turns a ConfigMap into a downstream object.
func ConfigMapObject(cm *corev1.ConfigMap) wire.Object {
	return wire.Object{
		Kind: wire.KindConfigMap, UID: string(cm.UID), Namespace: cm.Namespace, Name: cm.Name, Version: cm.ResourceVersion,
		ConfigMap: &wire.ConfigMap{Data: cm.Data, Binary: cm.BinaryData},
	}
}

// SecretObject turns a Secret into a downstream object.
func SecretObject(s *corev1.Secret) wire.Object {
	return wire.Object{
		Kind: wire.KindSecret, UID: string(s.UID), Namespace: s.Namespace, Name: s.Name, Version: s.ResourceVersion,
		Secret: pullAuths(s, &wire.Secret{Data: s.Data, Type: string(s.Type)}),
	}
}

// PodObject translates a pod into a downstream object.
func PodObject(p *corev1.Pod, claims Claims) (wire.Object, error) {
	wp, err := Translate(p, claims)
	if err != nil {
		return wire.Object{}, err
	}
	return wire.Object{Kind: wire.KindPod, UID: string(p.UID), Namespace: p.Namespace, Name: p.Name, Version: p.ResourceVersion, Pod: wp}, nil
}

// Ref names a ConfigMap or Secret in a pod's namespace.
type Ref struct {
	Kind      wire.Kind // KindConfigMap or KindSecret
	Namespace string
	Name      string
}

// Refs returns the ConfigMaps and Secrets a pod references: envFrom, env
// valueFrom, volumes, projected sources and imagePullSecrets, without
// duplicates.
func Refs(p *corev1.Pod) []Ref {
	seen := map[Ref]bool{}
	var out []Ref
	add := func(k wire.Kind, name string) {
		r := Ref{Kind: k, Namespace: p.Namespace, Name: name}
		if name != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, r := range p.Spec.ImagePullSecrets {
		add(wire.KindSecret, r.Name)
	}
	for i := range p.Spec.Volumes {
		vs := &p.Spec.Volumes[i].VolumeSource
		if vs.ConfigMap != nil {
			add(wire.KindConfigMap, vs.ConfigMap.Name)
		}
		if vs.Secret != nil {
			add(wire.KindSecret, vs.Secret.SecretName)
		}
		if vs.Projected != nil {
			for _, s := range vs.Projected.Sources {
				if s.ConfigMap != nil {
					add(wire.KindConfigMap, s.ConfigMap.Name)
				}
				if s.Secret != nil {
					add(wire.KindSecret, s.Secret.Name)
				}
			}
		}
	}
	ephemeral := make([]corev1.Container, len(p.Spec.EphemeralContainers))
	for i := range p.Spec.EphemeralContainers {
		ephemeral[i] = corev1.Container(p.Spec.EphemeralContainers[i].EphemeralContainerCommon)
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers, ephemeral} {
		for i := range cs {
			for _, ef := range cs[i].EnvFrom {
				if ef.ConfigMapRef != nil {
					add(wire.KindConfigMap, ef.ConfigMapRef.Name)
				}
				if ef.SecretRef != nil {
					add(wire.KindSecret, ef.SecretRef.Name)
				}
			}
			for _, e := range cs[i].Env {
				if f := e.ValueFrom; f != nil {
					if f.ConfigMapKeyRef != nil {
						add(wire.KindConfigMap, f.ConfigMapKeyRef.Name)
					}
					if f.SecretKeyRef != nil {
						add(wire.KindSecret, f.SecretKeyRef.Name)
					}
				}
			}
		}
	}
	return out
}
