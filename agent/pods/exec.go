package pods

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"outpost.dev/agent/runtime/containerd"
)

// portDialTimeout bounds a port-forward's dial into a pod.
const portDialTimeout = 10 * time.Second

// ErrNoPod is returned by Exec and DialPort for a pod this node does not
// run.
var ErrNoPod = errors.New("no such pod on this node")

// podWorker returns the worker and desired object of pod namespace/name.
func (r *Reconciler) podWorker(namespace, pod string) (*worker, bool, error) {
	if err := checkLogNames(namespace, pod, ""); err != nil {
		return nil, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		w.mu.Lock()
		o, gone := w.pod, w.gone
		w.mu.Unlock()
		if o != nil && !gone && o.Namespace == namespace && o.Name == pod && o.Pod != nil {
			return w, o.Pod.HostNetwork, nil
		}
	}
	return nil, false, fmt.Errorf("pod %s/%s: %w", namespace, pod, ErrNoPod)
}

// Exec runs args in the running container of pod namespace/name, with
// stdio, as the container's own process (containerd.Runtime.ExecStream),
// and returns its exit code.
func (r *Reconciler) Exec(ctx context.Context, namespace, pod, container string, args []string, stdio containerd.Stdio) (int, error) {
	if err := checkLogNames(namespace, pod, container); err != nil {
		return 0, err
	}
	w, _, err := r.podWorker(namespace, pod)
	if err != nil {
		return 0, err
	}
	rt := r.runtime()
	if rt == nil {
		return 0, errors.New("containerd is not reachable on this node")
	}
	cs, err := rt.ListLabeled(ctx, labelPodUID, w.uid)
	if err != nil {
		return 0, fmt.Errorf("containerd: %w", err)
	}
	c, err := runningContainer(ctx, rt, cs, namespace, pod, container)
	if err != nil {
		return 0, err
	}
	code, err := rt.ExecStream(ctx, c.ID, args, stdio)
	if err != nil {
		return 0, fmt.Errorf("container %q of pod %s/%s: %w", container, namespace, pod, err)
	}
	return code, nil
}

// runningContainer picks the running instance of container among cs (the
// pod's containers). A started one that is neither running nor exited is
// one whose shim did not answer containerd in time (a busy node:
// containerd then says UNKNOWN, which arrives as no state at all); it is
// taken when none is known to run, and the caller's call into it says
// whether it runs.
func runningContainer(ctx context.Context, rt *containerd.Runtime, cs []containerd.Container, namespace, pod, container string) (containerd.Container, error) {
	found := false
	var unsure *containerd.Container
	var statusErr error
	for i, c := range cs {
		if c.Labels[labelContainer] != container {
			continue
		}
		found = true
		st, err := rt.Status(ctx, c.ID)
		switch {
		case errors.Is(err, containerd.ErrNotFound):
		case err != nil:
			statusErr = err
		case st.State == containerd.StateRunning:
			return c, nil
		case st.State != containerd.StateExited && st.State != containerd.StatePaused && !st.StartedAt.IsZero():
			unsure = &cs[i]
		}
	}
	switch {
	case !found:
		return containerd.Container{}, fmt.Errorf("pod %s/%s has no container %q", namespace, pod, container)
	case unsure != nil:
		return *unsure, nil
	case statusErr != nil:
		return containerd.Container{}, fmt.Errorf("container %q of pod %s/%s: %w", container, namespace, pod, statusErr)
	}
	return containerd.Container{}, fmt.Errorf("container %q of pod %s/%s is not running", container, namespace, pod)
}

// DialPort connects to port on the loopback of pod namespace/name: in
// the pod's network namespace, or on the host for a hostNetwork pod.
func (r *Reconciler) DialPort(ctx context.Context, namespace, pod string, port uint16) (net.Conn, error) {
	w, hostNet, err := r.podWorker(namespace, pod)
	if err != nil {
		return nil, err
	}
	ns := ""
	if !hostNet {
		dir, err := w.podDir()
		if err != nil {
			return nil, err
		}
		ns = filepath.Join(dir, "netns")
	}
	c, err := dialIn(ctx, ns, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), portDialTimeout)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s port %d: %w", namespace, pod, port, err)
	}
	return c, nil
}
