package pods

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"outpost.dev/wire"
)

// The downward API and a container's environment, resolved as a kubelet
// resolves them (makeEnvironmentVariables): envFrom sources in order,
// then env, each value able to refer to the variables before it.

// env resolves a container's environment, in order, with $(VAR)
// references to earlier variables expanded as Kubernetes does. A later
// variable of the same name replaces an earlier one in place.
func (w *worker) env(o *wire.Object, rf *refs, c *wire.Container) ([]string, error) {
	var names []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			names = append(names, k)
		}
		vals[k] = v
	}
	for i := range c.EnvFrom {
		if err := w.envFromSource(o, rf, &c.EnvFrom[i], set); err != nil {
			return nil, err
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if e.From == nil {
			v = expand(v, vals)
		} else {
			var ok bool
			var err error
			v, ok, err = w.envValueFrom(o, rf, c, e.From)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			if !ok {
				continue
			}
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(names))
	for _, k := range names {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

// envFromSource sets every key of an envFrom ConfigMap (its data, not its
// binaryData) or Secret, with the prefix, in key order. Keys that are no
// environment variable name (the relaxed rule: printable ASCII without
// "=") are skipped and logged, as a kubelet skips them.
func (w *worker) envFromSource(o *wire.Object, rf *refs, src *wire.EnvFromSource, set func(k, v string)) error {
	data := map[string]string{}
	kind, name := "configMap", src.ConfigMap
	if src.Secret != "" {
		kind, name = "secret", src.Secret
		s := rf.secrets[o.Namespace+"/"+name]
		if s == nil {
			if src.Optional {
				return nil
			}
			return fmt.Errorf("envFrom: secret %q not found", name)
		}
		for k, v := range s.Data {
			data[k] = string(v)
		}
	} else {
		cm := rf.configMaps[o.Namespace+"/"+name]
		if cm == nil {
			if src.Optional {
				return nil
			}
			return fmt.Errorf("envFrom: configmap %q not found", name)
		}
		for k, v := range cm.Data {
			data[k] = v
		}
	}
	var invalid []string
	for _, k := range slices.Sorted(maps.Keys(data)) {
		n := src.Prefix + k
		if !envName(n) {
			invalid = append(invalid, n)
			continue
		}
		set(n, data[k])
	}
	if len(invalid) > 0 {
		w.r.log.Warn(fmt.Sprintf("pods: keys [%s] from the EnvFrom %s %s/%s were skipped since they are considered invalid environment variable names",
			strings.Join(invalid, ", "), kind, o.Namespace, name), "pod", o.Namespace+"/"+o.Name, "reason", "InvalidEnvironmentVariableNames")
	}
	return nil
}

// envName is Kubernetes' relaxed environment variable name rule (the
// one a v1.34+ kubelet applies): printable ASCII other than "=".
func envName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' || s[i] == '=' {
			return false
		}
	}
	return true
}

// envValueFrom resolves one valueFrom; false: skip the variable (an
// optional reference that is missing).
func (w *worker) envValueFrom(o *wire.Object, rf *refs, c *wire.Container, src *wire.EnvSource) (string, bool, error) {
	switch {
	case src.ConfigMap != nil:
		r := src.ConfigMap
		cm := rf.configMaps[o.Namespace+"/"+r.Name]
		if cm == nil {
			if r.Optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("configmap %q not found", r.Name)
		}
		if v, ok := cm.Data[r.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.Binary[r.Key]; ok {
			return string(v), true, nil
		}
		if r.Optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", r.Key, o.Namespace, r.Name)
	case src.Secret != nil:
		r := src.Secret
		s := rf.secrets[o.Namespace+"/"+r.Name]
		if s == nil {
			if r.Optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("secret %q not found", r.Name)
		}
		if v, ok := s.Data[r.Key]; ok {
			return string(v), true, nil
		}
		if r.Optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in Secret %s/%s", r.Key, o.Namespace, r.Name)
	case src.Resource != nil:
		v, err := w.resource(o.Pod, c, src.Resource)
		return v, err == nil, err
	}
	v, err := w.field(o, src.Field)
	return v, err == nil, err
}

// field is the downward API's fieldRef: in env (one value) and in
// downwardAPI volume files (metadata.labels and metadata.annotations as
// KEY="value" lines, sorted).
func (w *worker) field(o *wire.Object, path string) (string, error) {
	switch path {
	case "metadata.name":
		return o.Name, nil
	case "metadata.namespace":
		return o.Namespace, nil
	case "metadata.uid":
		return o.UID, nil
	case "metadata.labels":
		return formatMap(o.Pod.Labels), nil
	case "metadata.annotations":
		return formatMap(o.Pod.Annotations), nil
	case "spec.nodeName":
		return w.r.cfg.NodeName, nil
	case "spec.serviceAccountName":
		return o.Pod.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		// One address: hostIPs is that one.
		return w.r.getHostIP(), nil
	case "status.podIP":
		return w.podIP(o.Pod), nil
	case "status.podIPs":
		return strings.Join(w.podIPs(o.Pod), ","), nil
	}
	if k, ok := subscript(path, "metadata.labels"); ok {
		return o.Pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return o.Pod.Annotations[k], nil
	}
	return "", fmt.Errorf("downward API field %q is not supported (metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, "+
		"metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP, status.hostIPs are)", path)
}

// subscript returns KEY of base['KEY'].
func subscript(path, base string) (string, bool) {
	p, ok := strings.CutPrefix(path, base+"['")
	if !ok || !strings.HasSuffix(p, "']") {
		return "", false
	}
	return strings.TrimSuffix(p, "']"), true
}

// formatMap writes labels or annotations the way a kubelet's downward API
// volume does: KEY="value" lines (the value Go-quoted), sorted by key,
// without a final newline.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + strconv.Quote(m[k]))
	}
	return b.String()
}

// resource is the downward API's resourceFieldRef: the named container's
// (or c's) limit or request, divided by the divisor rounding up. A limit
// the container does not set is the pod's (pod-level resources), else
// the node's allocatable, as a kubelet defaults it.
func (w *worker) resource(p *wire.Pod, c *wire.Container, r *wire.ResourceRef) (string, error) {
	if r.Container != "" && (c == nil || r.Container != c.Name) {
		c = nil
		for _, cs := range [][]wire.Container{p.InitContainers, p.Containers} {
			for i := range cs {
				if cs[i].Name == r.Container {
					c = &cs[i]
				}
			}
		}
		if c == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q in the pod", r.Container)
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef %s: no containerName", r.Resource)
	}
	alloc := w.r.allocatable()
	var pod wire.PodResources
	if p.Resources != nil {
		pod = *p.Resources
	}
	limit := func(own, podLevel, node int64) int64 {
		switch {
		case own > 0:
			return own
		case podLevel > 0:
			return podLevel
		}
		return node
	}
	var v int64
	cpu := false
	switch r.Resource {
	case wire.ResourceLimitsCPU:
		v, cpu = limit(c.CPUMillis, pod.CPUMillis, alloc.CPUMillis), true
	case wire.ResourceLimitsMemory:
		v = limit(c.MemoryBytes, pod.MemoryBytes, alloc.MemoryBytes)
	case wire.ResourceRequestsCPU:
		v, cpu = c.RequestCPUMillis, true
	case wire.ResourceRequestsMemory:
		v = c.RequestMemoryBytes
	default:
		return "", fmt.Errorf("resourceFieldRef: resource %q is not supported (limits.cpu, limits.memory, requests.cpu, requests.memory are)", r.Resource)
	}
	d := r.Divisor
	if d <= 0 {
		d = 1
		if cpu {
			d = 1000
		}
	}
	return strconv.FormatInt(ceilDiv(v, d), 10), nil
}

// ceilDiv is v/d rounded up, for v >= 0 and d > 0.
func ceilDiv(v, d int64) int64 {
	q := v / d
	if v%d != 0 {
		q++
	}
	return q
}
