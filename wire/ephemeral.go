package wire

import "fmt"

// EphemeralContainer is one of a pod's ephemeral containers (kubectl
// debug). Its Container carries no ports, probes, resources or lifecycle
// hooks: the API server refuses them on ephemeral containers.
type EphemeralContainer struct {
	Container Container `cbor:"1,keyasint"`
	// Target names a container of the pod (regular or init) whose PID
	// namespace it joins (targetContainerName); "": the pod's own choice
	// (Pod.Namespaces).
	Target string `cbor:"2,keyasint,omitempty" json:",omitempty"`
}

// validateEphemeral checks the pod's ephemeral containers: valid
// containers without what an ephemeral container may not have, names
// unique across the pod, targets naming a container of the pod.
func (p *Pod) validateEphemeral() error {
	if len(p.EphemeralContainers) == 0 {
		return nil
	}
	if n := len(p.Containers) + len(p.InitContainers) + len(p.EphemeralContainers); n > maxContainers {
		return fmt.Errorf("pod: %d containers with the ephemeral ones (limit %d)", n, maxContainers)
	}
	names := map[string]bool{}
	for _, cs := range [][]Container{p.InitContainers, p.Containers} {
		for i := range cs {
			names[cs[i].Name] = true
		}
	}
	seen := map[string]bool{}
	for i := range p.EphemeralContainers {
		e := &p.EphemeralContainers[i]
		c := &e.Container
		if err := c.Validate(); err != nil {
			return fmt.Errorf("pod: ephemeral %w", err)
		}
		if names[c.Name] || seen[c.Name] {
			return fmt.Errorf("pod: two containers named %q", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Sidecar:
			return fmt.Errorf("pod: ephemeral container %s: only init containers can be sidecars", c.Name)
		case c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil:
			return fmt.Errorf("pod: ephemeral container %s: probes are not allowed", c.Name)
		case c.PostStart != nil || c.PreStop != nil:
			return fmt.Errorf("pod: ephemeral container %s: lifecycle hooks are not allowed", c.Name)
		case c.CPUMillis != 0 || c.MemoryBytes != 0 || c.RequestCPUMillis != 0 || c.RequestMemoryBytes != 0:
			return fmt.Errorf("pod: ephemeral container %s: resources are not allowed", c.Name)
		}
		if e.Target != "" && !names[e.Target] {
			return fmt.Errorf("pod: ephemeral container %s: target %q is not a container of the pod", c.Name, e.Target)
		}
	}
	return nil
}
