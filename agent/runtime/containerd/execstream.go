package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Stdio connects an interactive exec (ExecStream) to its caller.
type Stdio struct {
	// Stdin, if not nil, feeds the process's stdin; its end (io.EOF)
	// closes the process's stdin. ExecStream does not wait for its end:
	// after it returned, the caller ends a Stdin still being read.
	Stdin io.Reader
	// Stdout and Stderr, if not nil, get the process's output. With TTY
	// the terminal's output goes to Stdout and Stderr is not used.
	Stdout, Stderr io.Writer
	// TTY runs the process on a terminal (a console the shim holds).
	TTY bool
	// Resize, if not nil, delivers terminal sizes (width, height).
	Resize <-chan [2]uint16
}

// outputGrace bounds the wait for output after the process exited, when
// a background child still holds the FIFOs.
const outputGrace = 2 * time.Second

// ExecStream runs args in running container id, as its process (user,
// environment, working directory and capabilities of the container's
// spec), with stdio through FIFOs the shim opens, and returns its exit
// code once it exited and its output was copied. If ctx ends first the
// process is killed and ctx's error returned.
func (r *Runtime) ExecStream(ctx context.Context, id string, args []string, stdio Stdio) (int, error) {
	if len(args) == 0 {
		return 0, errors.New("exec: no command")
	}
	pj, err := r.execSpec(ctx, id, args, stdio.TTY)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "outpost-exec-")
	if err != nil {
		return 0, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer os.RemoveAll(dir)
	execID := "exec-" + randomID()
	req := enc(nil).str(execContainerID, id)

	var stdinPath string
	if stdio.Stdin != nil {
		stdinPath = filepath.Join(dir, "stdin")
		if err := syscall.Mkfifo(stdinPath, 0o600); err != nil {
			return 0, fmt.Errorf("container %s: exec stdin: %w", id, err)
		}
		req = req.str(execStdin, stdinPath)
	}
	var outs []*execPipe
	defer func() {
		for _, o := range outs {
			o.close()
		}
	}()
	stdout, stderr := stdio.Stdout, stdio.Stderr
	if !stdio.TTY && (stdout == nil) != (stderr == nil) {
		// The shim wants both or neither (it opens a stream without a
		// FIFO as the file ""): the one not asked for is dropped here.
		if stdout == nil {
			stdout = io.Discard
		} else {
			stderr = io.Discard
		}
	}
	for _, o := range []struct {
		name  string
		field protowire.Number
		w     io.Writer
	}{{"stdout", execStdout, stdout}, {"stderr", execStderr, stderr}} {
		if o.w == nil || (stdio.TTY && o.name == "stderr") {
			continue
		}
		p, err := newExecPipe(filepath.Join(dir, o.name), o.w)
		if err != nil {
			return 0, fmt.Errorf("container %s: exec %s: %w", id, o.name, err)
		}
		outs = append(outs, p)
		req = req.str(o.field, p.path)
	}
	if stdio.TTY {
		req = req.bool(execTerminal, true)
	}
	req = req.msg(execSpec, enc(nil).str(anyTypeURL, processTypeURL).bytes(anyValue, pj)).str(execExecID, execID)
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Exec", req); err != nil {
		return 0, fmt.Errorf("container %s: exec: %w", id, err)
	}
	proc := enc(nil).str(taskContainerID, id).str(taskExecID, execID)
	bg := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	}
	defer func() {
		ctx, cancel := bg()
		defer cancel()
		_, _ = r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/DeleteProcess", proc)
	}()
	if _, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/Start", proc); err != nil {
		return 0, fmt.Errorf("container %s: start exec: %w", id, err)
	}
	for _, o := range outs {
		o.start()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	var stdin atomic.Pointer[os.File]
	if stdinPath != "" {
		// The shim opens its ends of the FIFO (a reader, and a writer
		// that CloseIO closes) in goroutines of its own, after Start. Our
		// end is opened write-only, which waits for the shim's reader:
		// what is written then stays in the pipe until read, and its end
		// is seen only once the reader is there. (A read-write end,
		// written and closed before the shim's opens ran, lost the input,
		// or left the shim's reader waiting for a writer for good, and the
		// process for the end of its stdin.)
		opened := make(chan struct{})
		go func() {
			f, err := os.OpenFile(stdinPath, os.O_WRONLY, 0)
			if err != nil {
				close(opened)
				return
			}
			stdin.Store(f)
			close(opened)
			select {
			case <-stop: // the process is gone
				f.Close()
				return
			default:
			}
			// Not waited for: a reader that never ends (a terminal) is the
			// caller's to end once ExecStream returned.
			_, _ = io.Copy(f, stdio.Stdin)
			f.Close()
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := bg()
			defer cancel()
			_, _ = r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/CloseIO", enc(nil).str(taskContainerID, id).str(taskExecID, execID).bool(closeIOStdin, true))
		}()
		defer func() {
			// Before the FIFO goes: an open still waiting for a reader
			// that never came (the process ended first) is let through.
			select {
			case <-opened:
			default:
				if u, err := os.OpenFile(stdinPath, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
					<-opened
					u.Close()
				}
			}
			if f := stdin.Load(); f != nil {
				f.Close()
			}
		}()
	}
	defer close(stop)
	if stdio.Resize != nil && stdio.TTY {
		wg.Go(func() {
			for {
				select {
				case sz := <-stdio.Resize:
					ctx, cancel := bg()
					_, _ = r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/ResizePty",
						enc(nil).str(taskContainerID, id).str(taskExecID, execID).uint(resizeWidth, uint64(sz[0])).uint(resizeHeight, uint64(sz[1])))
					cancel()
				case <-stop:
					return
				}
			}
		})
	}
	type exit struct {
		code int
		err  error
	}
	waited := make(chan exit, 1)
	waitCtx, cancelWait := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWait()
	go func() {
		b, err := r.c.unary(waitCtx, "containerd.services.tasks.v1.Tasks/Wait", proc)
		if err != nil {
			waited <- exit{0, fmt.Errorf("container %s: wait for exec: %w", id, err)}
			return
		}
		code, err := decodeWait(b)
		waited <- exit{int(code), err}
	}()
	var e exit
	select {
	case e = <-waited:
	case <-ctx.Done():
		kctx, cancel := bg()
		_, _ = r.c.unary(kctx, "containerd.services.tasks.v1.Tasks/Kill", enc(nil).str(taskContainerID, id).str(taskExecID, execID).uint(killSignal, uint64(syscall.SIGKILL)))
		cancel()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
		}
		return 0, ctx.Err()
	}
	if f := stdin.Load(); f != nil {
		f.Close() // the process is gone: unblock a write to a full pipe
	}
	// The output is copied out before the exit is reported.
	deadline := time.After(outputGrace)
	for _, o := range outs {
		o.wait(deadline)
	}
	return e.code, e.err
}

// decodeWait decodes a tasks WaitResponse.
func decodeWait(b []byte) (uint32, error) {
	var code uint32
	err := fields(b, "containerd.services.tasks.v1.WaitResponse", func(f field) error {
		if f.num != waitExitStatus {
			return nil
		}
		v, err := f.varint()
		code = uint32(v)
		return err
	})
	return code, err
}

// execPipe copies one output FIFO of an exec to a writer. Like
// execOutput it holds a writer of its own until the process exited, so
// the reader never sees end of file before the shim opened the FIFO.
type execPipe struct {
	path string
	r, w *os.File
	out  io.Writer
	done chan struct{}
}

func newExecPipe(path string, out io.Writer) (*execPipe, error) {
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		return nil, err
	}
	p := &execPipe{path: path, out: out, done: make(chan struct{})}
	var err error
	if p.r, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		return nil, err
	}
	if p.w, err = os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
		p.r.Close()
		return nil, err
	}
	return p, nil
}

func (p *execPipe) start() {
	go func() {
		defer close(p.done)
		buf := make([]byte, 32<<10)
		_, _ = io.CopyBuffer(p.out, p.r, buf)
	}()
}

// wait ends the agent's writer and waits for the copy to reach end of
// file, or until deadline (a background child still holds the FIFO).
func (p *execPipe) wait(deadline <-chan time.Time) {
	p.w.Close()
	select {
	case <-p.done:
	case <-deadline:
		p.r.Close()
		<-p.done
	}
}

func (p *execPipe) close() {
	p.w.Close()
	p.r.Close()
	select {
	case <-p.done:
	default:
		// never started: nothing to wait for
	}
}

// CloseStdin closes the standard input of container id's own process
// (an attach with stdinOnce ended): the shim holds the FIFO's other
// writer, so the process reads end of file only after this.
func (r *Runtime) CloseStdin(ctx context.Context, id string) error {
	_, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/CloseIO", enc(nil).str(taskContainerID, id).bool(closeIOStdin, true))
	return err
}

// ResizeTTY sets the terminal size of container id's own process.
func (r *Runtime) ResizeTTY(ctx context.Context, id string, width, height uint16) error {
	_, err := r.c.unary(ctx, "containerd.services.tasks.v1.Tasks/ResizePty",
		enc(nil).str(taskContainerID, id).uint(resizeWidth, uint64(width)).uint(resizeHeight, uint64(height)))
	return err
}
