package pods

import (
	"context"
	"fmt"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// Ephemeral containers (kubectl debug) are added to a running pod and run
// once: each is started when it first appears, in the pod's network
// namespace and, with a target, in the target container's PID namespace,
// and is never restarted nor replaced. They count in neither the pod's
// phase nor its readiness, and go with the pod.

// syncEphemeral starts the pod's ephemeral containers that never ran. It
// returns whether it changed anything in containerd.
func (w *worker) syncEphemeral(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, setup *podSetup, setupErr error,
	recs map[string][]*rec, due func(time.Time)) bool {
	acted := false
	for i := range o.Pod.EphemeralContainers {
		e := &o.Pod.EphemeralContainers[i]
		c := &e.Container
		x := latest(recs, c.Name)
		if x != nil && x.state != containerd.StateCreated {
			if x.exited() {
				delete(w.waiting, c.Name) // its failed start shows as its exit
			}
			continue // started once: it is not started again
		}
		ns, err := w.targetPIDNamespace(o.Pod, e, recs)
		if err != nil {
			w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "CreateContainerError", Message: err.Error()}
			due(w.r.now().Add(time.Second))
			continue
		}
		w.targetNS[c.Name] = ns
		acted = w.start(ctx, rt, o, rf, setup, setupErr, c, false, 0, x, due) || acted
		delete(w.targetNS, c.Name)
	}
	return acted
}

// targetPIDNamespace is the PID namespace ephemeral container e joins:
// its target's (/proc/PID/ns/pid of the target's running task) when it
// names one and the pod's containers do not share one already; "" for the
// pod's own choice.
func (w *worker) targetPIDNamespace(p *wire.Pod, e *wire.EphemeralContainer, recs map[string][]*rec) (string, error) {
	if e.Target == "" || p.PIDMode() != "" {
		return "", nil
	}
	x := latest(recs, e.Target)
	if x == nil || !x.running() || x.task == nil || x.task.Pid == 0 {
		return "", fmt.Errorf("target container %q is not running; it starts once the target runs", e.Target)
	}
	return fmt.Sprintf("/proc/%d/ns/pid", x.task.Pid), nil
}

// ephemeralOf is the ephemeral container of the pod named name, or nil.
func ephemeralOf(p *wire.Pod, name string) *wire.Container {
	for i := range p.EphemeralContainers {
		if p.EphemeralContainers[i].Container.Name == name {
			return &p.EphemeralContainers[i].Container
		}
	}
	return nil
}
