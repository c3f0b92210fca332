// Package crilog owns container log files in the CRI log format, the one
// kubelets and `kubectl logs` expect:
//
//	2026-11-25T21:05:00.123456789Z stdout F a whole line
//	2026-11-25T21:05:00.223456789Z stderr P the first part of a long line…
//
// Writer is the writer: it rotates the file by size and keeps a bounded
// number of rotated files. A Pump copies a container's streams into it,
// line by line. Run does that as containerd's binary logger (what
// "outpost-agent logger" and outpost-logger run), one small process per
// container, started and owned by the container's shim, so a container's
// output never depends on the agent being up; or the agent runs one Pump
// itself on the shim's FIFOs, every container's streams on one goroutine
// (agent/runtime/containerd, Spec.LogInAgent). docs/containerd.md
// measures the two.
//
// Stream is the reader: the current (or previous) log of a container with
// kubectl's tail, since, limit and follow semantics, across rotations.
package crilog

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for rotation.
const (
	DefaultMaxSize  = 4 << 20
	DefaultMaxFiles = 3 // the current file and two rotated ones
	// maxLine is the longest line written as one record; longer lines are
	// split into P (partial) records, as containerd's CRI plugin does.
	maxLine = 16 << 10
)

// Writer appends CRI log records to a file and rotates it: when the file
// would exceed MaxSize it becomes path.1 (path.1 becomes path.2, …) and
// at most MaxFiles files are kept. Safe for concurrent use.
type Writer struct {
	Path     string
	MaxSize  int64
	MaxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte
}

// OpenWriter opens (appends to) path.
func OpenWriter(path string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if maxFiles < 1 {
		maxFiles = DefaultMaxFiles
	}
	w := &Writer{Path: path, MaxSize: maxSize, MaxFiles: maxFiles, now: time.Now}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Record writes one record: stream is "stdout" or "stderr"; partial says
// the line continues in the next record.
func (w *Writer) Record(stream string, line []byte, partial bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	tag := " F "
	if partial {
		tag = " P "
	}
	b := w.now().UTC().AppendFormat(w.buf[:0], time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, tag...)
	b = append(b, line...)
	b = append(b, '\n')
	w.buf = b
	if w.size > 0 && w.size+int64(len(b)) > w.MaxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

func (w *Writer) rotate() error {
	w.f.Close()
	if w.MaxFiles == 1 {
		_ = os.Remove(w.Path)
	} else {
		_ = os.Remove(w.Path + "." + strconv.Itoa(w.MaxFiles-1))
		for i := w.MaxFiles - 2; i >= 1; i-- {
			_ = os.Rename(w.Path+"."+strconv.Itoa(i), w.Path+"."+strconv.Itoa(i+1))
		}
		if err := os.Rename(w.Path, w.Path+".1"); err != nil {
			return err
		}
	}
	return w.open()
}

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// Run is containerd's binary logger protocol: the container's stdout is
// fd 3, its stderr fd 4, and closing fd 5 tells the shim the logger is
// ready. It copies both streams into the rotated file at path with a Pump
// until both end. When the file cannot be opened the streams are still
// read, and dropped, so the container never blocks on them.
//
// When the task is deleted the shim closes its ends of the pipes and at
// once sends SIGTERM, for the logger to flush and exit, and SIGKILL a
// while later. Run ignores SIGTERM: what the container wrote last
// may still be in the pipes, and the streams' end, which follows, is
// what ends the copy.
func Run(path string, maxSize int64, maxFiles int) error {
	signal.Ignore(syscall.SIGTERM) // before fd 5 is closed: the shim's SIGTERM comes after that
	// Pipes, each: without the shim's, the Go runtime's own descriptors
	// (its epoll instance, its eventfd) may be 3 and 4.
	for _, fd := range []int{3, 4, 5} {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return fmt.Errorf("logger: fd %d is not a pipe: containerd's shim starts this (binary:// log URI), not a person", fd)
		}
	}
	w, openErr := OpenWriter(path, maxSize, maxFiles)
	unix.Close(5) // even on error: the shim must not wait for us
	if openErr != nil {
		w = nil
		openErr = fmt.Errorf("logger: %w", openErr)
	}
	c, err := NewPump().Start(w, nil, 3, 4)
	if err != nil {
		return errors.Join(openErr, fmt.Errorf("logger: %w", err))
	}
	<-c.Done()
	return errors.Join(openErr, c.Err())
}
