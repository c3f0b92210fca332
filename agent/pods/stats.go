package pods

import (
	"context"
	"errors"
	"fmt"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/agent/usage"
	"outpost.dev/wire"
)

// StatsContainers lists the running containers of this node's pods with
// their cgroups, for the usage the relay asks for (usage.Containers).
// At most twice wire.MaxStatsContainers are looked up.
func (r *Reconciler) StatsContainers(ctx context.Context) ([]usage.Container, error) {
	rt := r.runtime()
	if rt == nil {
		return nil, errors.New("containerd is not reachable on this node")
	}
	tasks, err := rt.Tasks(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	cs, err := rt.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd: %w", err)
	}
	var out []usage.Container
	for _, c := range cs {
		if len(out) >= 2*wire.MaxStatsContainers {
			break
		}
		ns, pod, name := c.Labels[labelPodNamespace], c.Labels[labelPodName], c.Labels[labelContainer]
		if !c.Managed() || ns == "" || pod == "" || name == "" || tasks[c.ID].State != containerd.StateRunning {
			continue
		}
		cg, err := rt.CgroupsPath(ctx, c.ID)
		if err != nil {
			continue // deleted since the list
		}
		out = append(out, usage.Container{Namespace: ns, Pod: pod, Name: name, Created: c.CreatedAt, Cgroup: cg,
			Pid: tasks[c.ID].Pid, LogPath: c.LogPath()})
	}
	return out, nil
}
