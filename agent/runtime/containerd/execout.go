package containerd

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// execOutput collects a bounded prefix of an exec's output through a FIFO
// the shim writes to. The agent holds a writer of its own until the exec
// is over, so the reader sees end of file only when the shim's writers and
// its own are closed, never before the shim opened the FIFO.
type execOutput struct {
	dir, path string
	r, w      *os.File
	done      chan struct{}

	mu  sync.Mutex
	buf []byte
	max int
}

func newExecOutput(max int) (*execOutput, error) {
	dir, err := os.MkdirTemp("", "outpost-exec-")
	if err != nil {
		return nil, err
	}
	o := &execOutput{dir: dir, path: filepath.Join(dir, "out"), done: make(chan struct{}), max: max}
	if err := syscall.Mkfifo(o.path, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Non-blocking opens: the read end first (a non-blocking writer
	// needs a reader), both polled by the runtime, so close unblocks reads.
	if o.r, err = os.OpenFile(o.path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if o.w, err = os.OpenFile(o.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
		o.r.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	go o.read()
	return o, nil
}

// read keeps the first max bytes and drops the rest until end of file.
func (o *execOutput) read() {
	defer close(o.done)
	chunk := make([]byte, 4096)
	for {
		n, err := o.r.Read(chunk)
		if n > 0 {
			o.mu.Lock()
			if room := o.max - len(o.buf); room > 0 {
				o.buf = append(o.buf, chunk[:min(n, room)]...)
			}
			o.mu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				o.mu.Lock()
				o.buf = append(o.buf, []byte("\n[output: "+err.Error()+"]")...)
				o.mu.Unlock()
			}
			return
		}
	}
}

// bytes ends the agent's writer and returns what was read once the shim
// has closed its ends (it does when the exec process is deleted), or
// after a short wait if something still holds them (a background child of
// the exec).
func (o *execOutput) bytes() []byte {
	o.w.Close()
	select {
	case <-o.done:
	case <-time.After(2 * time.Second):
		o.r.Close()
		<-o.done
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]byte(nil), o.buf...)
}

func (o *execOutput) close() {
	o.w.Close()
	o.r.Close()
	<-o.done
	os.RemoveAll(o.dir)
}
