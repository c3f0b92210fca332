package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// specTypeURL is how containerd types the OCI spec inside a Container.
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// Create creates container sp.ID from sp: its OCI spec, and a writable
// snapshot (named sp.ID) on top of the image, which must have been pulled.
// It does not start it.
func (r *Runtime) Create(ctx context.Context, sp Spec) error {
	if sp.ID == "" {
		return errors.New("create container: empty ID")
	}
	if !filepath.IsAbs(sp.LogPath) {
		return fmt.Errorf("container %s: LogPath %q must be an absolute path", sp.ID, sp.LogPath)
	}
	cfg, _, err := r.imageConfig(ctx, sp.Image)
	if err != nil {
		return fmt.Errorf("container %s: %w (pull it first)", sp.ID, err)
	}
	s, err := buildSpec(r.cfg.Namespace, sp, cfg.Config)
	if err != nil {
		return err
	}
	specJSON, err := json.Marshal(s)
	if err != nil {
		return err
	}
	chain := chainIDs(cfg.RootFS.DiffIDs)
	if len(chain) == 0 {
		return fmt.Errorf("container %s: image %s has no layers", sp.ID, sp.Image)
	}
	labels := map[string]string{}
	for k, v := range sp.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[labelLogPath] = sp.LogPath
	if sp.Stdin != "" {
		if !filepath.IsAbs(sp.Stdin) {
			return fmt.Errorf("container %s: Stdin %q must be an absolute path", sp.ID, sp.Stdin)
		}
		labels[LabelStdin] = sp.Stdin
	}
	if sp.TTY {
		labels[LabelTTY] = "true"
	}
	if sp.LogInAgent {
		if _, _, err := r.logFIFOPaths(sp.ID); err != nil {
			return err
		}
		rot, err := logRotation(sp)
		if err != nil {
			return err
		}
		labels[labelLogFIFO] = rot
	} else if sp.LogBinary != "" {
		u, err := logURI(sp)
		if err != nil {
			return err
		}
		labels[labelLogURI] = u
	}

	ctx, done, err := r.lease(ctx, 10*time.Minute)
	if err != nil {
		return err
	}
	defer done()
	_, err = r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Prepare",
		enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, sp.ID).str(prepareParent, chain[len(chain)-1]))
	if err != nil {
		return fmt.Errorf("container %s: prepare snapshot: %w", sp.ID, err)
	}
	c := enc(nil).str(containerID, sp.ID).labels(containerLabels, labels).str(containerImage, sp.Image).
		msg(containerRuntime, enc(nil).str(containerRuntimeName, runcRuntime)).
		msg(containerSpec, enc(nil).str(anyTypeURL, specTypeURL).bytes(anyValue, specJSON)).
		str(containerSnapshotter, Snapshotter).str(containerSnapshotKey, sp.ID)
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Create", enc(nil).msg(containerField, c)); err != nil {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, sp.ID))
		return fmt.Errorf("container %s: %w", sp.ID, err)
	}
	return nil
}

// Start creates and starts the task of container id, its stdout and
// stderr appended to the log path given at Create.
func (r *Runtime) Start(ctx context.Context, id string) error {
	info, err := r.container(ctx, id)
	if err != nil {
		return err
	}
	b, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Mounts", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, id))
	if err != nil {
		return fmt.Errorf("container %s: snapshot mounts: %w", id, err)
	}
	mounts, err := decodeMounts(b, "MountsResponse")
	if err != nil {
		return fmt.Errorf("container %s: %w", id, badReply("containerd.services.snapshots.v1.Snapshots/Mounts", err))
	}
	logURI := info.Labels[labelLogURI]
	if logURI == "" {
		logURI = "file://" + info.Labels[labelLogPath]
	}
	req := enc(nil).str(createTaskContainerID, id)
	for _, m := range mounts {
		req = req.msg(createTaskRootfs, m.enc())
	}
	tty := info.Labels[LabelTTY] == "true"
	rotation, inAgent := info.Labels[labelLogFIFO]
	var logFDs []int
	if inAgent {
		if err := r.waitLogCopy(ctx, id); err != nil {
			return err
		}
		paths, fds, err := r.openLogFIFOs(id, tty, true)
		if err != nil {
			return fmt.Errorf("container %s: log FIFOs: %w", id, err)
		}
		logFDs = fds
		defer func() {
			for _, fd := range logFDs { // unless handed to copyLogs
				unix.Close(fd)
			}
		}()
		req = req.str(createTaskStdout, paths[0])
		if len(paths) > 1 {
			req = req.str(createTaskStderr, paths[1])
		}
	}
	var fl *fifoLogger
	if in := info.Labels[LabelStdin]; in != "" {
		if err := makeFIFO(in); err != nil {
			return fmt.Errorf("container %s: stdin: %w", id, err)
		}
		req = req.str(createTaskStdin, in)
		if !tty && info.Labels[labelLogURI] != "" {
			// The shim passes stdin with a binary logger to a terminal only.
			if fl, err = openFIFOLogger(in); err != nil {
				return fmt.Errorf("container %s: stdin: %w", id, err)
			}
			defer fl.close()
		}
	}
	switch {
	case inAgent:
	case fl != nil:
		req = req.str(createTaskStdout, fl.Stdout).str(createTaskStderr, fl.Stderr)
	default:
		req = req.str(createTaskStdout, logURI).str(createTaskStderr, logURI)
	}
	if tty {
		req = req.bool(createTaskTerminal, true)
	}
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Create", req); err != nil {
		return fmt.Errorf("container %s: create task: %w", id, err)
	}
	if inAgent {
		// The shim holds the write ends now: reads see EOF only when it
		// closes them.
		r.copyLogs(id, info.Labels[labelLogPath], rotation, logFDs)
		logFDs = nil
	}
	if fl != nil {
		if err := r.startFIFOLogger(fl, id, logURI); err != nil {
			_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(taskContainerID, id))
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	// Taken before the call: a short-lived process can exit before Start
	// returns, and its start must not come after its exit.
	started := time.Now().UTC()
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Start", enc(nil).str(taskContainerID, id)); err != nil {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(taskContainerID, id))
		return fmt.Errorf("container %s: start task: %w", id, err)
	}
	label := labelStartedAt
	upd := enc(nil).
		msg(containerField, enc(nil).str(containerID, id).labels(containerLabels, map[string]string{label: started.Format(time.RFC3339Nano)})).
		msg(updateContainerMask, enc(nil).str(fieldMaskPaths, "labels."+label))
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Update", upd); err != nil {
		r.log.Warn("record container start time", "container", id, "err", err)
	}
	return nil
}

// logURI is the binary:// stdio URI of a container with a binary logger.
func logURI(sp Spec) (string, error) {
	if !filepath.IsAbs(sp.LogBinary) {
		return "", fmt.Errorf("container %s: LogBinary %q must be an absolute path", sp.ID, sp.LogBinary)
	}
	q := url.Values{"logger": {sp.LogPath}}
	for k, v := range sp.LogArgs {
		if k == "logger" {
			return "", fmt.Errorf("container %s: LogArgs may not set logger", sp.ID)
		}
		q.Set(k, v)
	}
	return (&url.URL{Scheme: "binary", Path: sp.LogBinary, RawQuery: q.Encode()}).String(), nil
}

// State is a container's state.
type State string

// States of a container.
const (
	StateCreated State = "created" // no task yet, or a task not started
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateExited  State = "exited"
)

// Status is what containerd says about one container.
type Status struct {
	ID        string
	State     State
	Pid       uint32
	ExitCode  uint32    // valid when State is StateExited
	CreatedAt time.Time // the container record
	StartedAt time.Time // zero until started
	ExitedAt  time.Time // zero until exited
	Labels    map[string]string
}

// Status returns the state of container id; ErrNotFound if it does not exist.
func (r *Runtime) Status(ctx context.Context, id string) (*Status, error) {
	info, err := r.container(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &Status{ID: id, State: StateCreated, CreatedAt: info.CreatedAt, Labels: info.Labels}
	if t, err := time.Parse(time.RFC3339Nano, info.Labels[labelStartedAt]); err == nil {
		st.StartedAt = t
	}
	b, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Get", enc(nil).str(taskContainerID, id))
	if errors.Is(err, ErrNotFound) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	t, err := decodeGetTask(b)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, badReply("containerd.services.tasks.v1.Tasks/Get", err))
	}
	st.Pid, st.State, st.ExitCode, st.ExitedAt = t.Pid, t.State, t.ExitCode, t.ExitedAt
	return st, nil
}

// Stop sends SIGTERM to the container's main process, waits up to grace
// for it to exit, then SIGKILLs every process in it and waits for the task
// to be stopped. A container without a running task is already stopped.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	st, err := r.Status(ctx, id)
	if err != nil {
		return err
	}
	if st.State != StateRunning && st.State != StatePaused {
		return nil
	}
	if err := r.kill(ctx, id, syscall.SIGTERM, false); err != nil {
		return err
	}
	if ok, err := r.waitExited(ctx, id, grace); err != nil || ok {
		return err
	}
	r.log.Info("container did not stop within its grace period: SIGKILL", "container", id, "grace", grace)
	if err := r.kill(ctx, id, syscall.SIGKILL, true); err != nil {
		return err
	}
	if ok, err := r.waitExited(ctx, id, 10*time.Second); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("container %s: still running 10s after SIGKILL", id)
	}
	return nil
}

func (r *Runtime) kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	_, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Kill", enc(nil).str(taskContainerID, id).uint(killSignal, uint64(sig)).bool(killAll, all))
	if err != nil && !errors.Is(err, ErrNotFound) { // NotFound: exited meanwhile
		return fmt.Errorf("container %s: signal %v: %w", id, sig, err)
	}
	return nil
}

// waitExited polls until the task has exited or d has passed.
func (r *Runtime) waitExited(ctx context.Context, id string, d time.Duration) (bool, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := r.Status(ctx, id)
		if err != nil {
			return false, err
		}
		if st.State == StateExited || st.State == StateCreated {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Delete removes container id: its task (which must not be running: Stop
// it first), the container record and its snapshot. Parts already gone
// are skipped, so Delete can finish an earlier, interrupted one.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	st, err := r.Status(ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if st != nil && (st.State == StateRunning || st.State == StatePaused) {
		return fmt.Errorf("container %s is %s: stop it before deleting it", id, st.State)
	}
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(taskContainerID, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: delete task: %w", id, err)
	}
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Delete", enc(nil).str(containerRequestID, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: delete: %w", id, err)
	}
	if _, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: remove snapshot: %w", id, err)
	}
	if in := ""; st != nil && filepath.IsAbs(st.Labels[LabelStdin]) {
		in = st.Labels[LabelStdin]
		for _, p := range []string{in, in + ".out", in + ".err"} {
			if err := removeFIFO(p); err != nil {
				r.log.Warn("remove a container's stdio FIFO", "container", id, "err", err)
			}
		}
	}
	if st == nil {
		return nil
	}
	if _, ok := st.Labels[labelLogFIFO]; ok {
		if out, errp, err := r.logFIFOPaths(id); err == nil {
			for _, p := range []string{out, errp} {
				if err := removeFIFO(p); err != nil {
					r.log.Warn("remove a container's log FIFO", "container", id, "err", err)
				}
			}
		}
	}
	return nil
}

// makeFIFO creates the FIFO at path (mode 0600) unless one is there; the
// directory is created too. Anything else at path is an error.
func makeFIFO(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	err := unix.Mkfifo(path, 0o600)
	if errors.Is(err, os.ErrExist) {
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return fmt.Errorf("%s exists and is not a FIFO", path)
		}
		return nil
	}
	return err
}

// removeFIFO removes the FIFO at path, if it is one.
func removeFIFO(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s is not a FIFO: left alone", path)
	}
	return os.Remove(path)
}

// Container is a container record in the namespace.
type Container struct {
	ID        string
	Image     string
	Labels    map[string]string
	CreatedAt time.Time
}

// Managed reports whether this package created the container.
func (c Container) Managed() bool { return c.Labels[LabelManaged] == "true" }

// List returns every container in the namespace, Outpost's and others';
// Managed tells them apart.
func (r *Runtime) List(ctx context.Context) ([]Container, error) {
	const method = "containerd.services.containers.v1.Containers/List"
	b, err := r.c.unary(ctx, method, nil)
	if err != nil {
		return nil, err
	}
	cs, err := decodeContainers(b)
	if err != nil {
		return nil, badReply(method, err)
	}
	return cs, nil
}

func (r *Runtime) container(ctx context.Context, id string) (Container, error) {
	c, _, err := r.containerSpec(ctx, id)
	return c, err
}

// containerSpec returns container id and its OCI spec (JSON).
func (r *Runtime) containerSpec(ctx context.Context, id string) (Container, []byte, error) {
	b, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Get", enc(nil).str(containerRequestID, id))
	if err != nil {
		return Container{}, nil, fmt.Errorf("container %s: %w", id, err)
	}
	c, spec, err := decodeGetContainer(b)
	if err != nil {
		return Container{}, nil, fmt.Errorf("container %s: %w", id, badReply("containerd.services.containers.v1.Containers/Get", err))
	}
	return c, spec, nil
}

// decodeGetContainer decodes a GetContainerResponse: the container and
// its spec.
func decodeGetContainer(b []byte) (c Container, spec []byte, err error) {
	found := false
	err = fields(b, "containerd.services.containers.v1.GetContainerResponse", func(f field) error {
		if f.num != containerField {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		found = true
		c, spec, err = decodeContainer(d)
		return err
	})
	if err == nil && !found {
		err = errors.New("containerd.services.containers.v1.GetContainerResponse without a container")
	}
	return c, spec, err
}

// decodeContainers decodes a ListContainersResponse.
func decodeContainers(b []byte) ([]Container, error) {
	var out []Container
	err := fields(b, "containerd.services.containers.v1.ListContainersResponse", func(f field) error {
		if f.num != listContainersContainers {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		c, _, err := decodeContainer(d)
		out = append(out, c)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeContainer decodes a containerd.services.containers.v1.Container;
// spec is the value of its spec (an Any holding the OCI spec's JSON).
func decodeContainer(b []byte) (c Container, spec []byte, err error) {
	const msg = "containerd.services.containers.v1.Container"
	c = Container{Labels: map[string]string{}}
	err = fields(b, msg, func(f field) error {
		var d []byte
		var err error
		switch f.num {
		case containerID:
			c.ID, err = f.str()
		case containerLabels:
			if d, err = f.bytes(); err == nil {
				var k, v string
				k, v, err = decodeLabel(d, msg)
				c.Labels[k] = v
			}
		case containerImage:
			c.Image, err = f.str()
		case containerSpec:
			if d, err = f.bytes(); err == nil {
				_, spec, err = decodeAny(d)
			}
		case containerCreatedAt:
			if d, err = f.bytes(); err == nil {
				c.CreatedAt, err = decodeTime(d)
			}
		}
		return err
	})
	return c, spec, err
}
