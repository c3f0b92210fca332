package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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
	if sp.LogBinary != "" {
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
		enc(nil).str(1, Snapshotter).str(2, sp.ID).str(3, chain[len(chain)-1]))
	if err != nil {
		return fmt.Errorf("container %s: prepare snapshot: %w", sp.ID, err)
	}
	c := enc(nil).str(1, sp.ID).labels(2, labels).str(3, sp.Image).
		msg(4, enc(nil).str(1, runcRuntime)).
		msg(5, enc(nil).str(1, specTypeURL).bytes(2, specJSON)).
		str(6, Snapshotter).str(7, sp.ID)
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Create", enc(nil).msg(1, c)); err != nil {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(1, Snapshotter).str(2, sp.ID))
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
	b, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Mounts", enc(nil).str(1, Snapshotter).str(2, id))
	if err != nil {
		return fmt.Errorf("container %s: snapshot mounts: %w", id, err)
	}
	mounts, err := decodeMounts(b)
	if err != nil {
		return err
	}
	logURI := info.Labels[labelLogURI]
	if logURI == "" {
		logURI = "file://" + info.Labels[labelLogPath]
	}
	req := enc(nil).str(1, id)
	for _, m := range mounts {
		req = req.msg(3, m.enc())
	}
	req = req.str(5, logURI).str(6, logURI)
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Create", req); err != nil {
		return fmt.Errorf("container %s: create task: %w", id, err)
	}
	// Taken before the call: a short-lived process can exit before Start
	// returns, and its start must not come after its exit.
	started := time.Now().UTC()
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Start", enc(nil).str(1, id)); err != nil {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(1, id))
		return fmt.Errorf("container %s: start task: %w", id, err)
	}
	label := labelStartedAt
	upd := enc(nil).
		msg(1, enc(nil).str(1, id).labels(2, map[string]string{label: started.Format(time.RFC3339Nano)})).
		msg(2, enc(nil).str(1, "labels."+label))
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
	b, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Get", enc(nil).str(1, id))
	if errors.Is(err, ErrNotFound) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	_ = fields(b, func(num protowire.Number, _ uint64, p []byte) {
		if num != 1 {
			return
		}
		_ = fields(p, func(num protowire.Number, v uint64, d []byte) {
			switch num {
			case 3:
				st.Pid = uint32(v)
			case 4:
				switch v {
				case 1:
					st.State = StateCreated
				case 2:
					st.State = StateRunning
				case 3:
					st.State = StateExited
				case 4, 5:
					st.State = StatePaused
				}
			case 9:
				st.ExitCode = uint32(v)
			case 10:
				st.ExitedAt = decodeTime(d)
			}
		})
	})
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
	_, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Kill", enc(nil).str(1, id).uint(3, uint64(sig)).bool(4, all))
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
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(1, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: delete task: %w", id, err)
	}
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Delete", enc(nil).str(1, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: delete: %w", id, err)
	}
	if _, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(1, Snapshotter).str(2, id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: remove snapshot: %w", id, err)
	}
	return nil
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
	b, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/List", nil)
	if err != nil {
		return nil, err
	}
	var out []Container
	err = fields(b, func(num protowire.Number, _ uint64, d []byte) {
		if num == 1 {
			out = append(out, decodeContainer(d))
		}
	})
	return out, err
}

func (r *Runtime) container(ctx context.Context, id string) (Container, error) {
	b, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Get", enc(nil).str(1, id))
	if err != nil {
		return Container{}, fmt.Errorf("container %s: %w", id, err)
	}
	var c Container
	err = fields(b, func(num protowire.Number, _ uint64, d []byte) {
		if num == 1 {
			c = decodeContainer(d)
		}
	})
	return c, err
}

func decodeContainer(b []byte) Container {
	c := Container{Labels: map[string]string{}}
	_ = fields(b, func(num protowire.Number, _ uint64, d []byte) {
		switch num {
		case 1:
			c.ID = string(d)
		case 2:
			k, v := decodeLabel(d)
			c.Labels[k] = v
		case 3:
			c.Image = string(d)
		case 8:
			c.CreatedAt = decodeTime(d)
		}
	})
	return c
}
