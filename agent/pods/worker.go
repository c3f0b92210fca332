package pods

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/agent/crilog"
	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// worker reconciles one pod, in steps: one goroutine at a time acts on
// the pod's containers, and only while a step is due (poked, or at the
// time the last step asked for), so a pod waiting for its next restart or
// probe holds a timer, not a goroutine. The reconciler hands it the latest
// desired pod.
type worker struct {
	r   *Reconciler
	uid string

	// smu guards the stepping: ctx is the reconciler's, busy says a
	// goroutine runs steps, again that it was poked meanwhile, timer is
	// the next step's.
	smu   sync.Mutex
	ctx   context.Context
	busy  bool
	again bool
	ended bool
	timer *time.Timer

	mu   sync.Mutex
	pod  *wire.Object
	rf   *refs
	gone bool
	// abortHooks ends a running postStart hook (the pod is being deleted).
	abortHooks context.CancelFunc

	// Owned by the step running (one at a time).
	crash     map[string]*backoff // by container name
	pulls     map[string]*backoff // by image
	waiting   map[string]wire.ContainerState
	probes    map[string]*probeState // by container ID
	last      *wire.PodStatus
	startTime int64
	owned     map[string]bool // writable volumes given the fsGroup
	// targetNS is the PID namespace of the ephemeral container being
	// started, by name, while it is (syncEphemeral).
	targetNS map[string]string
	// exceeded: the pod ran past its activeDeadlineSeconds; it is Failed
	// for good and its containers are stopped, never started again.
	exceeded bool
	ips      []string // the pod's addresses on the pod network

	// running mirrors last's phase for Reconciler.Running (metrics);
	// resend makes the next report go out even if unchanged (Resend).
	running, resend atomic.Bool
}

type backoff struct {
	delay time.Duration
	last  time.Time // crash: last restart; pull: last failure
	err   string
}

func newWorker(r *Reconciler, uid string) *worker {
	return &worker{r: r, uid: uid,
		crash: map[string]*backoff{}, pulls: map[string]*backoff{}, waiting: map[string]wire.ContainerState{},
		probes: map[string]*probeState{}, owned: map[string]bool{}, targetNS: map[string]string{}}
}

// begin lets the worker step, under ctx.
func (w *worker) begin(ctx context.Context) {
	w.smu.Lock()
	w.ctx = ctx
	w.smu.Unlock()
}

// poke runs a step now, or right after the one running.
func (w *worker) poke() { w.wake(true) }

// tick runs the step the last one asked for, unless a step is running
// (which sets the next time itself).
func (w *worker) tick() { w.wake(false) }

func (w *worker) wake(poke bool) {
	w.smu.Lock()
	defer w.smu.Unlock()
	if w.ctx == nil || w.ended {
		return
	}
	if w.busy {
		w.again = w.again || poke
		return
	}
	if !w.r.spawn() {
		return
	}
	w.busy = true
	go w.steps()
}

// set hands the worker its pod (nil: the pod is gone, clean up and stop).
func (w *worker) set(o *wire.Object, rf *refs) {
	w.mu.Lock()
	if o == nil {
		w.gone = true
	} else {
		cp := *o
		w.pod, w.rf = &cp, rf
	}
	if (o == nil || o.Pod.Deleting) && w.abortHooks != nil {
		w.abortHooks()
	}
	w.mu.Unlock()
	w.poke()
}

func (w *worker) orphan() bool    { w.mu.Lock(); defer w.mu.Unlock(); return w.gone }
func (w *worker) refsSeen() *refs { w.mu.Lock(); defer w.mu.Unlock(); return w.rf }

// deleting says the pod is gone or being deleted, as the latest set said.
func (w *worker) deleting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gone || (w.pod != nil && w.pod.Pod.Deleting)
}

// steps runs steps while they are due, then sets the timer for the next
// and returns.
func (w *worker) steps() {
	defer w.r.wg.Done()
	ctx := w.ctx
	for {
		next, removed := time.Time{}, false
		if ctx.Err() == nil {
			next, removed = w.step(ctx)
		}
		w.smu.Lock()
		if ctx.Err() != nil || removed {
			w.busy, w.ended = false, true
			if w.timer != nil {
				w.timer.Stop()
			}
			w.smu.Unlock()
			return
		}
		if w.again {
			w.again = false
			w.smu.Unlock()
			continue
		}
		d := time.Hour
		if !next.IsZero() {
			d = max(time.Until(next), 10*time.Millisecond)
		}
		if w.timer == nil {
			w.timer = time.AfterFunc(d, w.tick)
		} else {
			w.timer.Reset(d)
		}
		w.busy = false
		w.smu.Unlock()
		return
	}
}

// step syncs the pod, or tears it down once it is gone; it returns when
// to step again, and removed once the worker is done for good.
func (w *worker) step(ctx context.Context) (next time.Time, removed bool) {
	w.mu.Lock()
	o, rf, gone := w.pod, w.rf, w.gone
	w.mu.Unlock()
	if gone {
		if err := w.cleanup(ctx); err == nil {
			w.r.removeWorker(w)
			return time.Time{}, true
		} else if ctx.Err() == nil {
			w.r.log.Warn("pods: removing a deleted pod's containers; retrying", "uid", w.uid, "err", err)
		}
		return w.r.now().Add(5 * time.Second), false
	}
	if o != nil {
		return w.sync(ctx, o, rf), false
	}
	return time.Time{}, false
}

// rec is one container of the pod as containerd holds it.
type rec struct {
	c          containerd.Container
	name       string
	attempt    int
	init       bool
	task       *containerd.Task
	state      containerd.State
	exitCode   int32
	startedAt  time.Time
	finishedAt time.Time
	lost       bool // started, but the task is gone without an exit (reboot)
	oom        bool // the kernel's OOM killer ended it
}

func (x *rec) running() bool {
	return x.state == containerd.StateRunning || x.state == containerd.StatePaused
}
func (x *rec) exited() bool { return x.state == containerd.StateExited }

// records lists the pod's containers, reaping exited tasks on the way,
// grouped by container name, newest attempt first.
func (w *worker) records(ctx context.Context, rt *containerd.Runtime) (map[string][]*rec, error) {
	cs, err := rt.ListLabeled(ctx, labelPodUID, w.uid)
	if err != nil {
		return nil, err
	}
	tasks, err := rt.Tasks(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]*rec{}
	for _, c := range cs {
		if !c.Managed() {
			continue
		}
		x := &rec{c: c, name: c.Labels[labelContainer], init: c.Labels[labelInit] == "true", startedAt: c.StartedAt()}
		x.attempt, _ = strconv.Atoi(c.Labels[labelAttempt])
		if t, ok := tasks[c.ID]; ok {
			x.task = &t
			x.state = t.State
			if t.State == containerd.StateExited {
				x.exitCode, x.finishedAt = int32(t.ExitCode), t.ExitedAt
				x.oom = rt.OOMKilled(c.ID) // before Reap deletes the cgroup
				if err := rt.Reap(ctx, c.ID, t); err != nil {
					w.r.log.Warn("pods: reaping an exited container", "container", c.ID, "err", err)
				}
			}
		} else if code, at, ok := c.Exit(); ok {
			x.state, x.exitCode, x.finishedAt = containerd.StateExited, int32(code), at
			x.oom = c.OOMKilled()
		} else if !x.startedAt.IsZero() {
			// Started, no task, no recorded exit: the machine (or
			// containerd's state) went away under it.
			x.state, x.exitCode, x.lost = containerd.StateExited, 255, true
		} else {
			x.state = containerd.StateCreated
		}
		out[x.name] = append(out[x.name], x)
	}
	for _, xs := range out {
		sort.Slice(xs, func(i, j int) bool { return xs[i].attempt > xs[j].attempt })
	}
	return out, nil
}

func latest(recs map[string][]*rec, name string) *rec {
	if xs := recs[name]; len(xs) > 0 {
		return xs[0]
	}
	return nil
}

// containerHash identifies a container's spec: a container whose spec
// changed (a new image) is replaced, as a kubelet does.
func containerHash(c *wire.Container) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// containerID is readable in ctr and unique: the container's name, a hash
// of the pod UID, the attempt, and a random part, so an ID is never
// reused (runc's state of a container lost in a crash may outlive it).
func containerID(uid, name string, attempt int) string {
	sum := sha256.Sum256([]byte(uid))
	if len(name) > 40 {
		name = name[:40]
	}
	var r [3]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%s-%d-%s", name, hex.EncodeToString(sum[:6]), attempt, hex.EncodeToString(r[:]))
}

func gracePeriod(p *wire.Pod) time.Duration {
	g := p.TerminationGracePeriodSeconds
	if p.Deleting && p.DeletionGracePeriodSeconds > 0 {
		g = p.DeletionGracePeriodSeconds
	}
	return max(time.Duration(g)*time.Second, 2*time.Second)
}

// sync makes the pod's containers what its spec says and reports status.
// It returns when it wants to run again (zero: only when poked).
func (w *worker) sync(ctx context.Context, o *wire.Object, rf *refs) time.Time {
	rt := w.r.runtime()
	pod := o.Pod
	now := w.r.now()
	retry := now.Add(2 * time.Second)
	recs, err := w.records(ctx, rt)
	if err != nil {
		if !errors.Is(err, containerd.ErrUnavailable) && ctx.Err() == nil {
			w.r.log.Warn("pods: listing a pod's containers", "pod", o.Namespace+"/"+o.Name, "err", err)
		}
		return retry
	}
	if w.startTime == 0 {
		w.startTime = now.Unix()
		for _, xs := range recs {
			for _, x := range xs {
				if t := x.c.CreatedAt.Unix(); t > 0 && t < w.startTime {
					w.startTime = t
				}
			}
		}
	}
	if pod.Deleting {
		w.terminate(ctx, rt, o, recs)
		if recs, err = w.records(ctx, rt); err == nil {
			w.report(o, recs, true)
		}
		return retry
	}
	if pod.Finished != "" {
		// The API holds the pod's final phase: nothing of it runs again,
		// and what it left (its logs, the last attempts) stays until it
		// is deleted.
		w.running.Store(false)
		w.terminate(ctx, rt, o, recs)
		for _, xs := range recs {
			for _, x := range xs {
				if x.running() {
					return retry
				}
			}
		}
		return time.Time{}
	}
	var deadline time.Time
	if d := pod.ActiveDeadlineSeconds; d > 0 && !w.exceeded {
		deadline = time.Unix(w.startTime, 0).Add(time.Duration(d) * time.Second)
		if !now.Before(deadline) {
			w.exceeded = true
			w.r.log.Info("pods: pod ran past its activeDeadlineSeconds; stopping it", "pod", o.Namespace+"/"+o.Name, "deadline", d)
		}
	}
	if w.exceeded {
		// As a kubelet: the pod fails, its containers are killed with
		// the pod's grace period and none starts again.
		w.terminate(ctx, rt, o, recs)
		clear(w.waiting)
		if recs, err = w.records(ctx, rt); err == nil {
			w.report(o, recs, false)
		}
		for _, xs := range recs {
			for _, x := range xs {
				if x.running() {
					return retry
				}
			}
		}
		return time.Time{}
	}

	var next time.Time
	due := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	acted := false
	// Containers the spec no longer names.
	names := map[string]bool{}
	for _, c := range pod.InitContainers {
		names[c.Name] = true
	}
	for _, c := range pod.Containers {
		names[c.Name] = true
	}
	for i := range pod.EphemeralContainers {
		names[pod.EphemeralContainers[i].Container.Name] = true
	}
	for name, xs := range recs {
		if !names[name] {
			for _, x := range xs {
				w.remove(ctx, rt, x, gracePeriod(pod))
			}
			delete(recs, name)
			acted = true
		}
	}

	setup, setupErr := w.setUp(ctx, o, rf)
	// Once a regular container exists the pod is initialized: init
	// containers do not run again, sidecars no longer hold anything up.
	initialized := isInitialized(pod, recs)
	done := mainDone(pod, recs)
	initDone, initFailed := true, false
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		x := latest(recs, c.Name)
		if c.Sidecar {
			if done {
				continue // stopped below
			}
			started, a := w.syncSidecar(ctx, rt, o, rf, setup, setupErr, c, x, due)
			acted = a || acted
			if started || initialized {
				continue
			}
			initDone = false
			break
		}
		if initialized || (x != nil && x.exited() && x.exitCode == 0) {
			continue
		}
		initDone = false
		switch {
		case x != nil && x.running():
		case x != nil && x.exited():
			if pod.RestartPolicy == "Never" {
				initFailed = true
				break // the pod failed
			}
			acted = w.restart(ctx, rt, o, rf, setup, setupErr, c, true, x, due) || acted
		default:
			acted = w.start(ctx, rt, o, rf, setup, setupErr, c, true, next0(x), x, due) || acted
		}
		break
	}
	if initDone {
		for i := range pod.Containers {
			c := &pod.Containers[i]
			x := latest(recs, c.Name)
			switch {
			case x == nil:
				acted = w.start(ctx, rt, o, rf, setup, setupErr, c, false, 0, nil, due) || acted
			case x.c.Labels[labelHash] != containerHash(c):
				acted = w.replace(ctx, rt, o, rf, setup, setupErr, c, false, x, due) || acted
			case x.running():
				due(w.probe(ctx, rt, o, c, x))
			case x.state == containerd.StateCreated:
				acted = w.start(ctx, rt, o, rf, setup, setupErr, c, false, x.attempt, x, due) || acted
			case x.exited():
				if restarts(pod.RestartPolicy, x.exitCode) {
					acted = w.restart(ctx, rt, o, rf, setup, setupErr, c, false, x, due) || acted
				}
			}
		}
	}
	if !done && !initFailed {
		acted = w.syncEphemeral(ctx, rt, o, rf, setup, setupErr, recs, due) || acted
	}
	if done || initFailed {
		// The pod is Succeeded or Failed: its sidecars stop, last first.
		acted = w.stopSidecars(ctx, rt, o, recs, time.Now().Add(gracePeriod(pod))) || acted
	}
	if acted {
		if r2, err := w.records(ctx, rt); err == nil {
			recs = r2
		}
	}
	w.collect(ctx, rt, recs)
	w.report(o, recs, false)
	// Refresh files of ConfigMap, Secret and projected volumes now and then.
	due(now.Add(time.Minute))
	due(deadline)
	return next
}

func next0(x *rec) int {
	if x == nil {
		return 0
	}
	return x.attempt
}

// restarts says whether restartPolicy restarts a container that exited
// with code.
func restarts(policy string, code int32) bool {
	switch policy {
	case "Always":
		return true
	case "OnFailure":
		return code != 0
	}
	return false
}

// isInitialized says a regular container of the pod exists (or existed):
// its init containers have done their part, as a kubelet decides it.
func isInitialized(p *wire.Pod, recs map[string][]*rec) bool {
	for i := range p.Containers {
		if len(recs[p.Containers[i].Name]) > 0 {
			return true
		}
	}
	return false
}

// mainDone says every regular container of the pod has finished for good
// (restartPolicy Never, or OnFailure and it succeeded): the pod is
// Succeeded or Failed.
func mainDone(p *wire.Pod, recs map[string][]*rec) bool {
	if p.RestartPolicy == "Always" {
		return false
	}
	for i := range p.Containers {
		x := latest(recs, p.Containers[i].Name)
		if x == nil || !x.exited() || restarts(p.RestartPolicy, x.exitCode) {
			return false
		}
	}
	return true
}

// syncSidecar keeps sidecar c (an init container with restartPolicy
// Always) running: started when missing, restarted after its crash
// back-off whenever it exited (whatever the pod's restartPolicy),
// replaced when its spec changed, probed while it runs. started says it
// runs and has started (its startup probe passed, its postStart hook
// returned): the next init container may start.
func (w *worker) syncSidecar(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, setup *podSetup, setupErr error,
	c *wire.Container, x *rec, due func(time.Time)) (started, acted bool) {
	switch {
	case x == nil:
		acted = w.start(ctx, rt, o, rf, setup, setupErr, c, true, 0, nil, due)
	case x.c.Labels[labelHash] != containerHash(c):
		acted = w.replace(ctx, rt, o, rf, setup, setupErr, c, true, x, due)
	case x.running():
		due(w.probe(ctx, rt, o, c, x))
		return w.started(c, x), false
	case x.state == containerd.StateCreated:
		acted = w.start(ctx, rt, o, rf, setup, setupErr, c, true, x.attempt, x, due)
	default:
		acted = w.restart(ctx, rt, o, rf, setup, setupErr, c, true, x, due)
	}
	if acted {
		due(w.r.now()) // look again at once: the next container may wait for it
	}
	return false, acted
}

// started says running container x of c has started: its startup probe
// (if any) passed. Its postStart hook has returned: start waits for it.
func (w *worker) started(c *wire.Container, x *rec) bool {
	if x == nil || !x.running() {
		return false
	}
	if ps := w.probes[x.c.ID]; ps != nil {
		return ps.started
	}
	return c.StartupProbe == nil
}

// stopSidecars stops the pod's running sidecars in reverse order, each
// with what is left until deadline (at least 2 s). It says whether it
// stopped any.
func (w *worker) stopSidecars(ctx context.Context, rt *containerd.Runtime, o *wire.Object, recs map[string][]*rec, deadline time.Time) bool {
	acted := false
	for i := len(o.Pod.InitContainers) - 1; i >= 0; i-- {
		c := &o.Pod.InitContainers[i]
		if !c.Sidecar {
			continue
		}
		for _, x := range recs[c.Name] {
			if !x.running() {
				continue
			}
			grace := max(time.Until(deadline), minGraceAfterPreStop)
			w.r.log.Info("pods: stopping a sidecar", "pod", o.Namespace+"/"+o.Name, "container", c.Name, "grace", grace)
			if err := w.kill(ctx, rt, o, c, x, grace, ""); err != nil {
				w.r.log.Warn("pods: stopping a container", "container", x.c.ID, "err", err)
			}
			acted = true
		}
	}
	return acted
}

// replace stops container x, whose spec changed (a new image), and starts
// the next attempt from the new spec c, as a kubelet does.
func (w *worker) replace(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, setup *podSetup, setupErr error,
	c *wire.Container, init bool, x *rec, due func(time.Time)) bool {
	w.r.log.Info("pods: container spec changed; replacing it", "pod", o.Namespace+"/"+o.Name, "container", c.Name)
	if x.running() {
		// The preStop hook is the running container's: the old spec's
		// is no longer known, so the new one's runs, as with a kubelet.
		if err := w.kill(ctx, rt, o, c, x, gracePeriod(o.Pod), ""); err != nil {
			w.r.log.Warn("pods: stopping a container", "container", x.c.ID, "err", err)
			due(w.r.now().Add(2 * time.Second))
			return false
		}
	}
	delete(w.crash, c.Name)
	return w.start(ctx, rt, o, rf, setup, setupErr, c, init, x.attempt+1, nil, due)
}

// restart starts the next attempt of an exited container, after its
// crash back-off.
func (w *worker) restart(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, setup *podSetup, setupErr error,
	c *wire.Container, init bool, x *rec, due func(time.Time)) bool {
	now := w.r.now()
	b := w.crash[c.Name]
	if b != nil && !x.lost && now.Sub(x.finishedAt) < b.delay {
		until := x.finishedAt.Add(b.delay)
		w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", b.delay, c.Name, o.Name, o.Namespace, o.UID)}
		due(until)
		return false
	}
	return w.start(ctx, rt, o, rf, setup, setupErr, c, init, x.attempt+1, nil, due)
}

// nextCrashBackoff advances container name's back-off as a restart happens.
func (w *worker) nextCrashBackoff(name string) {
	now := w.r.now()
	b := w.crash[name]
	if b == nil || now.Sub(b.last) > w.r.cfg.BackoffReset {
		b = &backoff{delay: w.r.cfg.BackoffBase}
	} else {
		b.delay = min(b.delay*2, w.r.cfg.BackoffMax)
	}
	b.last = now
	w.crash[name] = b
}

// start creates and starts attempt of container c (reusing x if it is a
// created, never started record of that attempt). It returns whether it
// changed anything in containerd.
func (w *worker) start(ctx context.Context, rt *containerd.Runtime, o *wire.Object, rf *refs, setup *podSetup, setupErr error,
	c *wire.Container, init bool, attempt int, x *rec, due func(time.Time)) bool {
	log := w.r.log.With("pod", o.Namespace+"/"+o.Name, "container", c.Name)
	if w.deleting() {
		return false // deleted during this pass (a postStart hook was interrupted): start nothing more
	}
	if setupErr != nil {
		w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "CreateContainerConfigError", Message: truncate(setupErr.Error(), 1000)}
		due(w.r.now().Add(5 * time.Second))
		return false
	}
	imageID, st, wake := w.ensureImage(ctx, rt, o, rf, c, log)
	if st != nil {
		w.waiting[c.Name] = *st
		due(wake)
		return false
	}
	sp, err := w.spec(o, rf, setup, c, init, attempt, imageID)
	if err != nil {
		w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "CreateContainerConfigError", Message: truncate(err.Error(), 1000)}
		due(w.r.now().Add(5 * time.Second))
		return false
	}
	if x != nil {
		// A record of this attempt that never started (an earlier try
		// was interrupted): replace it, under a new ID, as IDs are never
		// reused: an agent killed during task create leaves containerd's
		// state of that task behind, and a create under the old ID fails.
		if err := rt.Delete(ctx, x.c.ID); err != nil && !errors.Is(err, containerd.ErrNotFound) {
			log.Warn("pods: removing an unstarted container", "err", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(sp.LogPath), 0o755); err != nil {
		log.Warn("pods: log directory", "err", err)
	}
	_ = os.Remove(sp.LogPath) // a fresh attempt starts a fresh log
	for _, f := range crilog.Files(sp.LogPath) {
		_ = os.Remove(f)
	}
	if attempt > 0 {
		w.nextCrashBackoff(c.Name)
	}
	if err := rt.Create(ctx, sp); err != nil {
		log.Warn("pods: creating container", "err", err)
		reason := "CreateContainerError"
		if ce := (*containerd.ConfigError)(nil); errors.As(err, &ce) {
			reason = "CreateContainerConfigError"
		}
		w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: reason, Message: truncate(err.Error(), 1000)}
		due(w.r.now().Add(w.r.cfg.BackoffBase))
		return true
	}
	if err := rt.Start(ctx, sp.ID); err != nil {
		log.Warn("pods: starting container", "err", err)
		// Reads as an exit (128, as CRI reports a failed start): the
		// restart policy and crash back-off apply.
		if merr := rt.MarkExited(context.WithoutCancel(ctx), sp.ID, 128, w.r.now()); merr != nil {
			log.Warn("pods: recording a failed start", "err", merr)
		}
		w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "RunContainerError", Message: truncate(err.Error(), 1000)}
		due(w.r.now().Add(time.Second))
		return true
	}
	delete(w.waiting, c.Name)
	log.Info("pods: container started", "id", sp.ID, "image", c.Image, "attempt", attempt)
	if herr, aborted := w.postStart(ctx, rt, o, c, sp.ID); aborted {
		log.Info("pods: postStart hook interrupted: the pod is being deleted")
	} else if herr != nil {
		log.Warn("pods: postStart hook failed (FailedPostStartHook); killing the container", "err", herr)
		x := &rec{c: containerd.Container{ID: sp.ID}, name: c.Name, state: containerd.StateRunning}
		if err := w.kill(ctx, rt, o, c, x, gracePeriod(o.Pod), wire.PostStartHookFailed+herr.Error()); err != nil {
			log.Warn("pods: stopping a container", "err", err)
		}
		// It waits to restart if it will restart: a sidecar always, else
		// as restartPolicy says of its exit code.
		code := int32(137)
		if st, err := rt.Status(ctx, sp.ID); err == nil && st.State == containerd.StateExited {
			code = int32(st.ExitCode)
		}
		if c.Sidecar || restarts(o.Pod.RestartPolicy, code) {
			w.waiting[c.Name] = wire.ContainerState{Kind: wire.StateWaiting, Reason: "PostStartHookError", Message: clip(herr.Error(), 1000)}
		}
		due(w.r.now())
	}
	return true
}

// collect deletes attempts older than the previous one of each container
// (the previous stays for lastState and kubectl logs --previous).
func (w *worker) collect(ctx context.Context, rt *containerd.Runtime, recs map[string][]*rec) {
	for _, xs := range recs {
		for _, x := range xs[min(2, len(xs)):] {
			if x.running() {
				continue
			}
			if err := rt.Delete(ctx, x.c.ID); err != nil {
				w.r.log.Warn("pods: deleting an old container", "container", x.c.ID, "err", err)
				continue
			}
			w.removeLogs(x)
		}
	}
	for id := range w.probes {
		found := false
		for _, xs := range recs {
			for _, x := range xs {
				if x.c.ID == id && x.running() {
					found = true
				}
			}
		}
		if !found {
			delete(w.probes, id)
		}
	}
}

func (w *worker) removeLogs(x *rec) {
	p := x.c.LogPath()
	if p == "" {
		return
	}
	for _, f := range crilog.Files(p) {
		_ = os.Remove(f)
	}
}

// remove stops and deletes one container.
func (w *worker) remove(ctx context.Context, rt *containerd.Runtime, x *rec, grace time.Duration) {
	if x.running() {
		if err := rt.Stop(ctx, x.c.ID, grace); err != nil {
			w.r.log.Warn("pods: stopping a container", "container", x.c.ID, "err", err)
			return
		}
	}
	if err := rt.Delete(ctx, x.c.ID); err != nil {
		w.r.log.Warn("pods: deleting a container", "container", x.c.ID, "err", err)
		return
	}
	w.removeLogs(x)
}

// terminate stops every container of a deleting pod within the pod's
// grace period, each after its preStop hook: the regular containers in
// parallel, then the sidecars, last first.
func (w *worker) terminate(ctx context.Context, rt *containerd.Runtime, o *wire.Object, recs map[string][]*rec) {
	grace := gracePeriod(o.Pod)
	deadline := time.Now().Add(grace)
	var wg sync.WaitGroup
	for name, xs := range recs {
		c := specOf(o.Pod, name)
		if c != nil && c.Sidecar {
			continue
		}
		for _, x := range xs {
			if !x.running() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.r.log.Info("pods: stopping container of a deleted pod", "pod", o.Namespace+"/"+o.Name, "container", x.name, "grace", grace)
				if err := w.kill(ctx, rt, o, c, x, grace, ""); err != nil {
					w.r.log.Warn("pods: stopping a container", "container", x.c.ID, "err", err)
				}
			}()
		}
	}
	wg.Wait()
	w.stopSidecars(ctx, rt, o, recs, deadline)
}

// cleanup removes everything of a pod no longer desired: containers
// (stopped within the grace they were created with), snapshots, volume
// directories, network namespace and logs.
func (w *worker) cleanup(ctx context.Context) error {
	rt := w.r.runtime()
	recs, err := w.records(ctx, rt)
	if err != nil {
		return err
	}
	var errs []error
	var logDir string
	for _, xs := range recs {
		for _, x := range xs {
			if logDir == "" {
				if p := x.c.LogPath(); p != "" {
					logDir = filepath.Dir(filepath.Dir(p))
				}
			}
			grace := 30 * time.Second
			if g, err := strconv.Atoi(x.c.Labels[labelGrace]); err == nil {
				grace = max(time.Duration(g)*time.Second, 2*time.Second)
			}
			if x.running() {
				if err := rt.Stop(ctx, x.c.ID, grace); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if err := rt.Delete(ctx, x.c.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := rt.RemovePodCgroup(podCgroupName(w.uid)); err != nil {
		return err
	}
	if err := w.tearDown(ctx); err != nil {
		return err
	}
	if logDir != "" && filepath.Dir(filepath.Clean(logDir)) == filepath.Clean(w.r.cfg.LogDir) {
		_ = os.RemoveAll(logDir)
	}
	w.r.log.Info("pods: removed a deleted pod", "uid", w.uid, "containers", len(recs))
	return nil
}

// report queues the pod's status if it changed.
func (w *worker) report(o *wire.Object, recs map[string][]*rec, deleting bool) {
	st := w.status(o, recs, deleting)
	if !w.resend.Swap(false) && w.last != nil && reflect.DeepEqual(w.last, st) {
		return
	}
	if _, err := w.r.cfg.Outbox.Append("pod/"+o.UID, wire.TypePodStatus, st); err != nil {
		w.r.log.Warn("pods: status not queued", "pod", o.Namespace+"/"+o.Name, "err", err)
		return
	}
	w.last = st
	w.running.Store(st.Phase == "Running")
}
