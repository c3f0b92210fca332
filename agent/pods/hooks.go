package pods

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// Lifecycle hooks run as a kubelet runs them:
//   - postStart right after the container's task starts; the worker waits
//     for it (the container is not running, nor started, in status until
//     it returns, and the pod's next containers wait too). A failed hook
//     kills the container (its preStop hook runs first), which then
//     restarts as its restart policy says, waiting with PostStartHookError;
//     its terminated state's message starts with wire.PostStartHookFailed,
//     from which the relay records a FailedPostStartHook event. Deleting
//     the pod interrupts it.
//   - preStop before every stop of a running container (deletion, a
//     liveness or startup probe failure, a replaced spec, a failed
//     postStart, a sidecar stopped after the main containers), within the
//     grace period; what it used counts against the grace, and at least
//     2 s are left for SIGTERM. A failed preStop does not hold the stop
//     up; the terminated state's message then starts with
//     wire.PreStopHookFailed (unless a failed probe or postStart hook
//     says why it was stopped), for a FailedPreStopHook event.

// maxHookOutput bounds what an exec hook's output is kept of.
const maxHookOutput = 10 << 10

// minGraceAfterPreStop is what a preStop hook always leaves for SIGTERM,
// as a kubelet leaves it.
const minGraceAfterPreStop = 2 * time.Second

// runHook runs hook h of container c, as container id, within timeout.
// The error is a kubelet's hook failure message.
func (w *worker) runHook(ctx context.Context, rt *containerd.Runtime, o *wire.Object, c *wire.Container, id string, h *wire.Handler, timeout time.Duration) error {
	podName := fmt.Sprintf("%s_%s(%s)", o.Name, o.Namespace, o.UID)
	switch {
	case len(h.Exec) > 0:
		code, out, err := rt.ExecOutput(ctx, id, h.Exec, timeout, maxHookOutput)
		if err == nil && code != 0 {
			err = fmt.Errorf("command '%s' exited with %d", strings.Join(h.Exec, " "), code)
		}
		if err != nil {
			return fmt.Errorf("Exec lifecycle hook (%v) for Container %q in Pod %q failed - error: %v, message: %q",
				h.Exec, c.Name, podName, err, clip(string(out), 500))
		}
		return nil
	case h.HTTPGet != nil:
		host, ns, err := w.dialTarget(o.Pod)
		if h.HTTPGet.Host != "" {
			ns = "" // a host of its own is dialled from the node, as a kubelet does
		}
		if err == nil {
			// Any answer will do: a kubelet does not look at the status.
			_, err = httpGet(ctx, ns, host, h.HTTPGet, timeout, "kube-lifecycle/outpost", true)
		}
		if err != nil {
			return fmt.Errorf("HTTP lifecycle hook (%s) for Container %q in Pod %q failed - error: %v",
				h.HTTPGet.Path, c.Name, podName, err)
		}
		return nil
	case h.SleepSeconds > 0:
		t := time.NewTimer(time.Duration(h.SleepSeconds) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done(): // the grace period ended: not a failure
		}
		return nil
	}
	return errors.New("lifecycle hook without an action")
}

// postStart runs c's postStart hook, if it has one, in container id just
// started. It returns the hook's failure, or nil; aborted says the pod
// was deleted meanwhile (then nothing failed).
func (w *worker) postStart(ctx context.Context, rt *containerd.Runtime, o *wire.Object, c *wire.Container, id string) (err error, aborted bool) {
	if c.PostStart == nil {
		return nil, false
	}
	hctx, cancel := context.WithCancel(ctx)
	w.mu.Lock()
	w.abortHooks = cancel
	if w.gone || (w.pod != nil && w.pod.Pod.Deleting) { // set ran before this
		cancel()
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.abortHooks = nil
		w.mu.Unlock()
		cancel()
	}()
	// A kubelet gives postStart no time limit; deleting the pod ends it.
	err = w.runHook(hctx, rt, o, c, id, c.PostStart, 24*time.Hour)
	if hctx.Err() != nil && ctx.Err() == nil {
		return nil, true
	}
	return err, false
}

// kill stops running container x of spec c (nil: not in the spec any
// more) as a kubelet does: c's preStop hook first, then SIGTERM with what
// is left of grace (at least 2 s after a hook), then SIGKILL. why, unless
// empty, is recorded as the reason it was stopped (its terminated state's
// message).
func (w *worker) kill(ctx context.Context, rt *containerd.Runtime, o *wire.Object, c *wire.Container, x *rec, grace time.Duration, why string) error {
	if why != "" {
		if err := rt.SetLabels(ctx, x.c.ID, map[string]string{labelProbeKill: clip(why, 1000)}); err != nil {
			w.r.log.Warn("pods: recording why a container is stopped", "container", x.c.ID, "err", err)
		}
	}
	if c != nil && c.PreStop != nil && x.running() && grace > 0 {
		start := time.Now()
		hctx, cancel := context.WithTimeout(ctx, grace)
		err := w.runHook(hctx, rt, o, c, x.c.ID, c.PreStop, grace)
		cancel()
		if err != nil {
			w.r.log.Warn("pods: preStop hook failed (FailedPreStopHook); stopping the container", "pod", o.Namespace+"/"+o.Name,
				"container", c.Name, "err", err)
			if why == "" && x.c.Labels[labelProbeKill] == "" {
				if lerr := rt.SetLabels(ctx, x.c.ID, map[string]string{labelProbeKill: clip(wire.PreStopHookFailed+err.Error(), 1000)}); lerr != nil {
					w.r.log.Warn("pods: recording a failed preStop hook", "container", x.c.ID, "err", lerr)
				}
			}
		}
		grace = max(grace-time.Since(start), minGraceAfterPreStop)
	}
	return rt.Stop(ctx, x.c.ID, grace)
}

// specOf is the container of the pod's spec named name (an ephemeral
// one too), or nil.
func specOf(p *wire.Pod, name string) *wire.Container {
	for _, cs := range [][]wire.Container{p.InitContainers, p.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return ephemeralOf(p, name)
}
