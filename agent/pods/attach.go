package pods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"outpost.dev/agent/crilog"
	"outpost.dev/agent/runtime/containerd"
)

// attachPoll is how often an attach looks for new output in the log;
// attachTail is how far back it looks for output written since it began.
const (
	attachPoll = 50 * time.Millisecond
	attachTail = 1024
)

// Attach connects stdio to the running container of pod namespace/name,
// as kubectl attach does on a kubelet node: what the container writes from
// now on (its log followed from the end, stdout and stderr apart, partial
// lines as they come) and, when stdio has one, its standard input (the
// FIFO its shim reads; the container must have been created with stdin).
// With the container's stdinOnce, the end of stdio's input closes the
// container's. A terminal is resized as stdio.Resize says. It returns once
// ctx ends or the container stops and its output is read.
func (r *Reconciler) Attach(ctx context.Context, namespace, pod, container string, stdio containerd.Stdio) error {
	if err := checkLogNames(namespace, pod, container); err != nil {
		return err
	}
	w, _, err := r.podWorker(namespace, pod)
	if err != nil {
		return err
	}
	rt := r.runtime()
	if rt == nil {
		return errors.New("containerd is not reachable on this node")
	}
	cs, err := rt.ListLabeled(ctx, labelPodUID, w.uid)
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	// Output from here on: taken before stdin is connected, so what the
	// input makes the container write is never before the start.
	since := time.Now()
	c, err := runningContainer(ctx, rt, cs, namespace, pod, container)
	if err != nil {
		return err
	}
	id, fifo := c.ID, c.Labels[containerd.LabelStdin]
	if stdio.Stdin != nil {
		in, err := w.openStdin(fifo, container)
		if err != nil {
			return fmt.Errorf("container %q of pod %s/%s: %w", container, namespace, pod, err)
		}
		once := w.stdinOnce(container)
		go func() {
			_, _ = io.Copy(in, stdio.Stdin)
			in.Close()
			if once {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := rt.CloseStdin(cctx, id); err != nil {
					r.log.Debug("pods: closing an attached container's stdin", "container", id, "err", err)
				}
			}
		}()
	}
	if stdio.TTY && stdio.Resize != nil {
		go func() {
			for {
				select {
				case sz := <-stdio.Resize:
					_ = rt.ResizeTTY(ctx, id, sz[0], sz[1])
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	path, running, err := r.LogPath(ctx, namespace, pod, container, false)
	if err != nil {
		return err
	}
	out := stdio.Stdout
	if out == nil {
		out = io.Discard
	}
	// The last attachTail lines, of which those logged since the attach
	// began: the input may have been answered before the log was opened.
	return crilog.Stream(ctx, path, crilog.Options{Tail: attachTail, Since: since, Follow: true, Poll: attachPoll,
		Done: func() bool { return !running() }, Raw: true, Stderr: stdio.Stderr}, out)
}

// openStdin opens fifo, the standard input the agent made for container
// (its containerd label), for writing. The label is the agent's own, but
// it is checked to lie beneath the pod's directory all the same.
func (w *worker) openStdin(fifo, container string) (*os.File, error) {
	if fifo == "" {
		return nil, errors.New("it was not created with stdin: true; attach without -i shows its output")
	}
	dir, err := w.podDir()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(filepath.Clean(fifo), dir+string(filepath.Separator)) {
		return nil, fmt.Errorf("its stdin %s is not beneath the pod's directory", fifo)
	}
	// Non-blocking, so a FIFO without a reader fails at once instead of
	// waiting; then blocking again, so that writes wait for the reader.
	f, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("its stdin: %w", err)
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// stdinOnce reports the container's stdinOnce.
func (w *worker) stdinOnce(container string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pod == nil || w.pod.Pod == nil {
		return false
	}
	c := specOf(w.pod.Pod, container)
	return c != nil && c.StdinOnce
}
