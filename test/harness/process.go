package harness

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process can take it before the caller binds it, so bind soon.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct free ports; all listeners stay open until
// every port is chosen, so the kernel cannot hand out the same one twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Process is a child process started by StartProcess: in its own process
// group (so Stop and Kill reach anything it forks), with stdout and stderr
// in a log file, and killed by the kernel if the process that started it
// dies (so a crashed or interrupted test leaves nothing behind).
type Process struct {
	// Name identifies the process in errors and logs.
	Name string
	// LogPath is the file that receives the process's stdout and stderr.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error         // exit error; written before done is closed
}

// StartProcess starts cmd with its stdout and stderr appended to logPath
// (its directory is created) and returns once the process runs. cmd's Env,
// Dir and ExtraFiles are kept; its Stdout, Stderr and SysProcAttr are
// replaced. Stop or Kill the process when done with it.
func StartProcess(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("%s: create log directory: %w", name, err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: open log file: %w", name, err)
	}
	fmt.Fprintf(logFile, "=== %s start %s: %s\n", time.Now().Format(time.RFC3339Nano), name, strings.Join(cmd.Args, " "))
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, cmd.Path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0; an *exec.ExitError otherwise, also when killed by a signal).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Stop asks the process group to finish with SIGTERM, waits up to timeout,
// then SIGKILLs it. It returns nil once the process is gone, however it
// ended (use Wait for the exit status), and may be called more than once.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		p.signalGroup(syscall.SIGKILL) // reach children left in the group
		return nil
	}
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		p.signalGroup(syscall.SIGKILL)
		return nil
	case <-t.C:
	}
	return p.Kill()
}

// Kill SIGKILLs the process group and waits until the process is reaped:
// a crash, for tests of what survives one.
func (p *Process) Kill() error {
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d): still running 10s after SIGKILL", p.Name, p.Pid())
	}
}

// signalGroup signals the whole process group; ESRCH (group already gone)
// is expected and ignored.
func (p *Process) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-p.Pid(), sig)
}

// LogTail returns the last n lines of the process's log, for error messages.
func (p *Process) LogTail(n int) string {
	return logTail(p.LogPath, n)
}

// String names the process and its pid, for logs.
func (p *Process) String() string {
	return fmt.Sprintf("%s (pid %d)", p.Name, p.Pid())
}

// logTail returns the last n lines of the file at path, reading at most its
// last 64 KiB so that a huge log cannot blow up an error message.
func logTail(path string, n int) string {
	const maxRead = 64 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		if _, err := f.Seek(-maxRead, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read %s: %v)", path, err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// exitedEarly is the error for a process that died while it was expected to
// become ready.
func exitedEarly(p *Process) error {
	return fmt.Errorf("%s exited during startup (%v)%s", p.Name, p.Wait(), tailSection(p))
}

// tailSection formats the end of a process's log for an error message.
func tailSection(p *Process) string {
	return fmt.Sprintf("\n--- last lines of %s ---\n%s\n---", p.LogPath, p.LogTail(40))
}
