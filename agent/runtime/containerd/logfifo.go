package containerd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"outpost.dev/agent/crilog"
)

// Logging in the agent (Spec.LogInAgent). The task's stdout and stderr are
// FIFOs, Config.LogFIFODir/<container ID>.out and .err; the shim copies
// the container's output into them and this package copies them into the
// CRI log file with crilog's Writer (the same format, rotation and bounds
// as the binary logger), with no process per container: every container's
// streams on the one goroutine of the Runtime's crilog.Pump.
//
// The shim holds a read end of each FIFO itself, so the FIFOs, and what is
// in them, outlive the agent: after a restart AttachLogs opens them again
// and the copy goes on where it stopped. While nobody reads, the container
// writes into the pipe until it is full (logPipeSize, raised from 64 KiB
// where the kernel allows), then its writes block until the agent is back;
// it is not killed. What the agent had read but not yet written when it
// died (at most part of one line and the lines of one read) is lost, and
// the output a container left in its pipes when it exited while the agent
// was down goes with the pipe when the shim closes it. docs/containerd.md
// compares this with the logger process.

// labelLogFIFO marks a container logged by the agent; its value is the
// rotation, "max-files=N&max-size=N" (never empty: containerd drops
// labels without a value).
const labelLogFIFO = "dev.outpost.log-fifo"

// logPipeSize is the pipe buffer asked for each log FIFO: what a container
// can write while the agent is down before its writes block.
const logPipeSize = 1 << 20

// logFIFOPaths are container id's stdout and stderr FIFOs. The ID becomes
// a file name, so it must be one: containerd's identifier syntax, no
// separators, no dot files.
func (r *Runtime) logFIFOPaths(id string) (stdout, stderr string, err error) {
	if !filepath.IsAbs(r.cfg.LogFIFODir) {
		return "", "", fmt.Errorf("container %s: logging in the agent needs an absolute LogFIFODir, not %q", id, r.cfg.LogFIFODir)
	}
	if !validFileID(id) {
		return "", "", fmt.Errorf("container %q: not usable as a log FIFO name", id)
	}
	p := filepath.Join(r.cfg.LogFIFODir, id)
	return p + ".out", p + ".err", nil
}

// validFileID reports whether id is 1–76 of [A-Za-z0-9._-], not starting
// with a dot.
func validFileID(id string) bool {
	if id == "" || len(id) > 76 || id[0] == '.' {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// logRotation is the label value for LogArgs' max-size and max-files,
// crilog's defaults for those not given.
func logRotation(sp Spec) (string, error) {
	q := url.Values{"max-size": {strconv.Itoa(crilog.DefaultMaxSize)}, "max-files": {strconv.Itoa(crilog.DefaultMaxFiles)}}
	for k, v := range sp.LogArgs {
		switch k {
		case "max-size", "max-files":
			if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
				return "", fmt.Errorf("container %s: LogArgs %s %q is not a size", sp.ID, k, v)
			}
			q.Set(k, v)
		default:
			return "", fmt.Errorf("container %s: LogArgs %s: logging in the agent knows only max-size and max-files", sp.ID, k)
		}
	}
	return q.Encode(), nil
}

// openLogFIFOs makes (unless make is false) and opens the read ends of
// container id's log FIFOs, non-blocking: the shim's opens of the write
// ends then do not wait, and the Runtime's crilog.Pump reads them. Without
// terminal, stderr is a FIFO of its own; a terminal's output is all stdout.
func (r *Runtime) openLogFIFOs(id string, tty, create bool) (paths []string, fds []int, err error) {
	out, errp, err := r.logFIFOPaths(id)
	if err != nil {
		return nil, nil, err
	}
	paths = []string{out}
	if !tty {
		paths = append(paths, errp)
	}
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for _, p := range paths {
		if create {
			if err := makeFIFO(p); err != nil {
				closeAll()
				return nil, nil, err
			}
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("open %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			unix.Close(fd)
			closeAll()
			return nil, nil, fmt.Errorf("%s is not a FIFO", p)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, logPipeSize); err != nil {
			r.log.Debug("a log FIFO keeps the kernel's pipe size", "path", p, "err", err)
		}
		fds = append(fds, fd)
	}
	return paths, fds, nil
}

// copyLogs copies the FIFOs' read ends fds (stdout, and stderr unless a
// terminal), which it takes over, into the log at path until the shim
// closes them (the task is deleted) or Close stops the copy. The caller
// has checked no copy of id runs.
func (r *Runtime) copyLogs(id, path, rotation string, fds []int) {
	q, _ := url.ParseQuery(rotation)
	maxSize, _ := strconv.ParseInt(q.Get("max-size"), 10, 64)
	maxFiles, _ := strconv.Atoi(q.Get("max-files"))
	w, err := crilog.OpenWriter(path, maxSize, maxFiles)
	if err != nil {
		r.log.Warn("a container's log cannot be written; its output is dropped", "container", id, "err", err)
		w = nil // the pump still reads the FIFOs: the container never blocks on them
	}
	// Registered before the copy can end: its end, on the pump's
	// goroutine, waits for logMu, and comes before its Done is closed.
	r.logMu.Lock()
	defer r.logMu.Unlock()
	var pc *crilog.PumpCopy
	pc, err = r.logPump.Start(w, func() {
		r.logMu.Lock() // pc is set once this is held
		if r.logCopies[id] == pc {
			delete(r.logCopies, id)
		}
		err := pc.Err()
		r.logMu.Unlock()
		if err != nil {
			r.log.Warn("copying a container's output into its log", "container", id, "err", err)
		}
	}, fds...)
	if err != nil {
		r.log.Warn("a container's output cannot be copied; it blocks once its pipes are full", "container", id, "err", err)
		if w != nil {
			w.Close()
		}
		return
	}
	r.logCopies[id] = pc
}

// waitLogCopy waits until no copy of container id's output runs (an
// earlier task's ends when the shim closes its FIFOs).
func (r *Runtime) waitLogCopy(ctx context.Context, id string) error {
	r.logMu.Lock()
	pc := r.logCopies[id]
	r.logMu.Unlock()
	if pc == nil {
		return nil
	}
	select {
	case <-pc.Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("container %s: the previous task's log copy still runs: %w", id, ctx.Err())
	}
}

// AttachLogs copies the output of every task of a container logged by the
// agent (Spec.LogInAgent) that this Runtime does not copy yet: after an
// agent restart, what the containers wrote meanwhile waits in their FIFOs.
// Call it before reaping exited tasks, whose shims may still hold output.
func (r *Runtime) AttachLogs(ctx context.Context) error {
	cs, err := r.List(ctx)
	if err != nil {
		return err
	}
	tasks, err := r.Tasks(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		rot, ok := c.Labels[labelLogFIFO]
		if _, hasTask := tasks[c.ID]; !ok || !hasTask || !c.Managed() {
			continue
		}
		r.logMu.Lock()
		_, running := r.logCopies[c.ID]
		r.logMu.Unlock()
		if running {
			continue
		}
		_, fds, err := r.openLogFIFOs(c.ID, c.Labels[LabelTTY] == "true", false)
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: attach to its log FIFOs: %w", c.ID, err))
			continue
		}
		r.copyLogs(c.ID, c.Labels[labelLogPath], rot, fds)
	}
	return errors.Join(errs...)
}

// closeLogs stops every copy (closing the FIFOs' read ends; the shims keep
// theirs, so unread output waits for the next AttachLogs) and waits for
// them to write what they had read.
func (r *Runtime) closeLogs() {
	r.logMu.Lock()
	var all []*crilog.PumpCopy
	for _, pc := range r.logCopies {
		all = append(all, pc)
	}
	r.logMu.Unlock()
	for _, pc := range all {
		r.logPump.Stop(pc)
	}
	for _, pc := range all {
		<-pc.Done()
	}
}
