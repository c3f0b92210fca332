package containerd

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Standard input without a terminal. containerd's shim gives a process
// started with a binary:// logger no standard input (pkg/process
// binaryIO), only a terminal's. So a container with Spec.Stdin and no TTY
// gets FIFOs for all three streams, which the shim copies, and its logger
// is started here instead of by the shim, with the same protocol
// (docs/containerd.md): the stdout and stderr FIFOs' read ends on fds 3
// and 4, a ready pipe on 5. The logger runs in its own session and in the
// runtime's cgroup "loggers", not the agent's, so the container's output
// never waits for the agent; it ends when the shim closes the FIFOs.

// fifoLogger is a logger started for a container's stdout and stderr
// FIFOs; Stdout and Stderr are the FIFOs' paths for the task.
type fifoLogger struct {
	Stdout, Stderr string
	files          []*os.File // read ends, held until the logger has them
}

// openFIFOLogger makes the stdout and stderr FIFOs next to stdin and
// opens their read ends, so the shim's open of the write ends (at task
// create) does not wait.
func openFIFOLogger(stdin string) (*fifoLogger, error) {
	l := &fifoLogger{Stdout: stdin + ".out", Stderr: stdin + ".err"}
	for _, p := range []string{l.Stdout, l.Stderr} {
		if err := makeFIFO(p); err != nil {
			l.close()
			return nil, err
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
		l.files = append(l.files, os.NewFile(uintptr(fd), p))
	}
	return l, nil
}

func (l *fifoLogger) close() {
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
}

// start runs the logger named by the binary:// URI logURI for container
// id, once the shim holds the FIFOs' write ends (after task create), and
// waits until it is ready. Its read ends block from then on: with the
// shim's writers open, the logger sees EOF only when the shim closes them.
func (r *Runtime) startFIFOLogger(l *fifoLogger, id, logURI string) error {
	defer l.close()
	u, err := url.Parse(logURI)
	if err != nil || u.Scheme != "binary" {
		return fmt.Errorf("log URI %q is not binary://", logURI)
	}
	for _, f := range l.files {
		if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
			return err
		}
	}
	var args []string
	for k, vs := range u.Query() {
		if len(vs) > 0 {
			args = append(args, k, vs[0])
		}
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	cmd := exec.Command(u.Path, args...)
	cmd.Env = []string{"CONTAINER_ID=" + id, "CONTAINER_NAMESPACE=" + r.cfg.Namespace}
	cmd.ExtraFiles = []*os.File{l.files[0], l.files[1], readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start the logger: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped here while this agent runs
	if err := r.AdoptProcess("loggers", cmd.Process.Pid); err != nil {
		r.log.Warn("a container's logger stays in the agent's cgroup", "container", id, "err", err)
	}
	var b [1]byte
	if _, err := readyR.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("wait for the logger: %w", err)
	}
	return nil
}
