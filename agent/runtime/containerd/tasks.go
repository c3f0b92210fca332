package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Task is the state of a container's task, as Tasks lists it.
type Task struct {
	ID       string // the container's ID
	Pid      uint32
	State    State
	ExitCode uint32
	ExitedAt time.Time
}

// Tasks returns the task of every container in the namespace that has
// one, keyed by container ID: one call however many containers run, so a
// reconciler can poll it cheaply.
func (r *Runtime) Tasks(ctx context.Context) (map[string]Task, error) {
	const method = "containerd.services.tasks.v1.Tasks/List"
	b, err := r.c.unary(ctx, method, nil)
	if err != nil {
		return nil, err
	}
	out, err := decodeTasks(b)
	if err != nil {
		return nil, badReply(method, err)
	}
	return out, nil
}

// decodeTasks decodes a ListTasksResponse, keyed by container ID.
func decodeTasks(b []byte) (map[string]Task, error) {
	out := map[string]Task{}
	err := fields(b, "containerd.services.tasks.v1.ListTasksResponse", func(f field) error {
		if f.num != listTasksTasks {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		t, err := decodeProcess(d)
		if err != nil {
			return err
		}
		out[t.ID] = t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeGetTask decodes a tasks GetResponse.
func decodeGetTask(b []byte) (t Task, err error) {
	const msg = "containerd.services.tasks.v1.GetResponse"
	found := false
	err = fields(b, msg, func(f field) error {
		if f.num != getTaskProcess {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		found = true
		t, err = decodeProcess(d)
		return err
	})
	if err == nil && !found {
		err = errors.New(msg + " without a process")
	}
	return t, err
}

// decodeProcess decodes a containerd.v1.types.Process.
// containerd fills container_id or only id (the container's ID for a
// task's init process) depending on the call.
func decodeProcess(b []byte) (t Task, err error) {
	var id string
	err = fields(b, "containerd.v1.types.Process", func(f field) error {
		var v uint64
		var d []byte
		var err error
		switch f.num {
		case processContainerID:
			t.ID, err = f.str()
		case processID:
			id, err = f.str()
		case processPid:
			v, err = f.varint()
			t.Pid = uint32(v)
		case processStatus:
			v, err = f.varint()
			t.State = decodeState(v)
		case processExitStatus:
			v, err = f.varint()
			t.ExitCode = uint32(v)
		case processExitedAt:
			if d, err = f.bytes(); err == nil {
				t.ExitedAt, err = decodeTime(d)
			}
		}
		return err
	})
	if t.ID == "" {
		t.ID = id
	}
	return t, err
}

// decodeState maps a containerd.v1.types.Status; UNKNOWN (0), or one
// newer than this package, reads as created.
func decodeState(v uint64) State {
	switch v {
	case statusCreated:
		return StateCreated
	case statusRunning:
		return StateRunning
	case statusStopped:
		return StateExited
	case statusPaused, statusPausing:
		return StatePaused
	}
	return StateCreated
}

// ListLabeled returns the containers whose label key has value v.
func (r *Runtime) ListLabeled(ctx context.Context, key, v string) ([]Container, error) {
	const method = "containerd.services.containers.v1.Containers/List"
	filter := fmt.Sprintf("labels.%q==%q", key, v)
	b, err := r.c.unary(ctx, method, enc(nil).str(listContainersFilters, filter))
	if err != nil {
		return nil, err
	}
	cs, err := decodeContainers(b)
	if err != nil {
		return nil, badReply(method, err)
	}
	return cs, nil
}

// processTypeURL is how containerd types an exec's process spec.
const processTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Process"

// Exec runs args in running container id, as its process (same user,
// environment and working directory), with no stdin and output discarded,
// and returns its exit code. It kills the process and returns an error
// wrapping context.DeadlineExceeded if it has not exited within timeout.
// For exec probes.
func (r *Runtime) Exec(ctx context.Context, id string, args []string, timeout time.Duration) (int, error) {
	code, _, err := r.ExecOutput(ctx, id, args, timeout, 0)
	return code, err
}

// ExecOutput is Exec that also returns the first max bytes of the
// process's stdout and stderr together (the rest is read and dropped, so
// a chatty process never blocks). With max 0 output is discarded.
func (r *Runtime) ExecOutput(ctx context.Context, id string, args []string, timeout time.Duration, max int) (int, []byte, error) {
	if len(args) == 0 {
		return 0, nil, errors.New("exec: no command")
	}
	var out *execOutput
	if max > 0 {
		var err error
		if out, err = newExecOutput(max); err != nil {
			return 0, nil, fmt.Errorf("container %s: exec output: %w", id, err)
		}
		defer out.close()
	}
	code, err := r.exec(ctx, id, args, timeout, out)
	if out == nil {
		return code, nil, err
	}
	return code, out.bytes(), err
}

func (r *Runtime) exec(ctx context.Context, id string, args []string, timeout time.Duration, out *execOutput) (int, error) {
	pj, err := r.execSpec(ctx, id, args, false)
	if err != nil {
		return 0, err
	}
	execID := "exec-" + randomID()
	req := enc(nil).str(execContainerID, id)
	if out != nil {
		// The shim copies the process's stdout and stderr into the FIFO
		// and closes it once the process is gone and copied out.
		req = req.str(execStdout, out.path).str(execStderr, out.path)
	}
	req = req.msg(execSpec, enc(nil).str(anyTypeURL, processTypeURL).bytes(anyValue, pj)).str(execExecID, execID)
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Exec", req); err != nil {
		return 0, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/DeleteProcess", enc(nil).str(taskContainerID, id).str(taskExecID, execID))
	}()
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Start", enc(nil).str(taskContainerID, id).str(taskExecID, execID)); err != nil {
		return 0, fmt.Errorf("container %s: start exec: %w", id, err)
	}
	deadline := time.Now().Add(timeout)
	for wait := 5 * time.Millisecond; ; wait = min(wait*2, 100*time.Millisecond) {
		b, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Get", enc(nil).str(taskContainerID, id).str(taskExecID, execID))
		if err != nil {
			return 0, fmt.Errorf("container %s: exec: %w", id, err)
		}
		t, err := decodeGetTask(b)
		if err != nil {
			return 0, fmt.Errorf("container %s: exec: %w", id, badReply("containerd.services.tasks.v1.Tasks/Get", err))
		}
		if t.State == StateExited {
			return int(t.ExitCode), nil
		}
		if time.Now().After(deadline) {
			_, _ = r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Kill", enc(nil).str(taskContainerID, id).str(taskExecID, execID).uint(killSignal, uint64(syscall.SIGKILL)))
			return 0, fmt.Errorf("container %s: exec %q: %w after %s", id, args[0], context.DeadlineExceeded, timeout)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// execSpec is the process spec of an exec in container id: the
// container's own process (user, environment, working directory,
// capabilities, as the CRI does) running args.
func (r *Runtime) execSpec(ctx context.Context, id string, args []string, tty bool) ([]byte, error) {
	_, specJSON, err := r.containerSpec(ctx, id)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(specJSON, &s); err != nil || s.Process == nil {
		return nil, fmt.Errorf("container %s: no process in its spec: %v", id, err)
	}
	p := *s.Process
	p.Args = args
	p.Terminal = tty
	p.ConsoleSize = nil
	return json.Marshal(p)
}

// Image returns a pulled image by name (its manifest digest and config);
// ErrNotFound if containerd does not hold it.
func (r *Runtime) Image(ctx context.Context, name string) (*Image, error) {
	cfg, digest, err := r.imageConfig(ctx, name)
	if err != nil {
		return nil, err
	}
	chain := chainIDs(cfg.RootFS.DiffIDs)
	top := ""
	if len(chain) > 0 {
		top = chain[len(chain)-1]
	}
	return &Image{Name: name, Digest: digest, ChainID: top, Config: cfg.Config}, nil
}

// Labels Reap records, so a container's exit outlives its task.
const (
	labelExitCode = "dev.outpost.exit-code"
	labelExitedAt = "dev.outpost.exited-at"
)

// Reap records the exit of container id's task t (which must have
// exited) in the container's labels, then deletes the task, which ends its
// shim: an exited container then costs no process, and Container.Exit
// (and Container.OOMKilled) still tells how it ended.
func (r *Runtime) Reap(ctx context.Context, id string, t Task) error {
	if t.State != StateExited {
		return fmt.Errorf("container %s: task is %s, not exited", id, t.State)
	}
	labels := map[string]string{
		labelExitCode: fmt.Sprint(t.ExitCode),
		labelExitedAt: t.ExitedAt.UTC().Format(time.RFC3339Nano),
	}
	if r.OOMKilled(id) {
		labels[labelOOM] = "true"
	}
	if err := r.SetLabels(ctx, id, labels); err != nil {
		return err
	}
	_, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Delete", enc(nil).str(taskContainerID, id))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("container %s: delete task: %w", id, err)
	}
	return nil
}

// MarkExited records an exit for a container whose task never ran (its
// start failed), so it reads like any exited container.
func (r *Runtime) MarkExited(ctx context.Context, id string, code uint32, at time.Time) error {
	return r.SetLabels(ctx, id, map[string]string{
		labelExitCode: fmt.Sprint(code), labelExitedAt: at.UTC().Format(time.RFC3339Nano),
	})
}

// SetLabels sets labels on container id, leaving the others.
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	c := enc(nil).str(containerID, id).labels(containerLabels, labels)
	mask := enc(nil)
	for k := range labels {
		mask = mask.str(fieldMaskPaths, "labels."+k)
	}
	if _, err := r.c.unary(ctx, "containerd.services.containers.v1.Containers/Update", enc(nil).msg(containerField, c).msg(updateContainerMask, mask)); err != nil {
		return fmt.Errorf("container %s: set labels: %w", id, err)
	}
	return nil
}

// StartedAt is when the container's (latest) task was started; zero if never.
func (c Container) StartedAt() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, c.Labels[labelStartedAt])
	return t
}

// Exit is the exit recorded by Reap or MarkExited; ok is false if none.
func (c Container) Exit() (code uint32, at time.Time, ok bool) {
	s, has := c.Labels[labelExitCode]
	if !has {
		return 0, time.Time{}, false
	}
	var n uint32
	if _, err := fmt.Sscan(s, &n); err != nil {
		return 0, time.Time{}, false
	}
	at, _ = time.Parse(time.RFC3339Nano, c.Labels[labelExitedAt])
	return n, at, true
}

// LogPath is the log file given at Create.
func (c Container) LogPath() string { return c.Labels[labelLogPath] }
