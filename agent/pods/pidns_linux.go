package pods

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A pod with shareProcessNamespace gets one PID namespace for its
// containers, held by a small process of its own as a kubelet's pod
// sandbox (pause) holds it: the agent's binary started as
// "BINARY pod-pid-namespace UID" in a new PID namespace, where it is PID 1
// and reaps the orphans the containers leave. The containers join it
// (/proc/PID/ns/pid). It runs in its own session and in a cgroup of the
// runtime's (pid-namespaces), not the agent's, so it outlives an agent
// restart, which finds it again from its PID file; it is killed when the
// pod is removed (the kernel then ends whatever is left in the namespace).

// pauseArg is the command word of the PID namespace holder.
const pauseArg = "pod-pid-namespace"

// IsPauseCall reports whether args (os.Args[1:]) start the holder of a
// pod's PID namespace; the binary then calls RunPause and exits.
func IsPauseCall(args []string) bool { return len(args) == 2 && args[0] == pauseArg }

// RunPause is the holder of a pod's PID namespace: it reaps children
// until SIGTERM or SIGINT.
func RunPause() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws unix.WaitStatus
			if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

// pidNamespace returns /proc/PID/ns/pid of the running holder of the
// pod's PID namespace, starting one if none runs (a first start, a
// reboot, or a holder that was killed: its containers then went with it).
func (w *worker) pidNamespace(dir string) (string, error) {
	pidFile := filepath.Join(dir, "pidns.pid")
	if pid, ok := w.holder(pidFile); ok {
		return fmt.Sprintf("/proc/%d/ns/pid", pid), nil
	}
	bin := w.r.cfg.PauseBinary
	if bin == "" {
		return "", errors.New("shareProcessNamespace: the agent has no binary to hold a pod's PID namespace (Config.PauseBinary)")
	}
	cmd := exec.Command(bin, pauseArg, w.uid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("shareProcessNamespace: start the PID namespace holder: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaped here while this agent runs
	pid := cmd.Process.Pid
	if rt := w.r.runtime(); rt != nil {
		if err := rt.AdoptProcess("pid-namespaces", pid); err != nil {
			w.r.log.Warn("pods: the PID namespace holder stays in the agent's cgroup: stopping the agent's service may stop it, and the pod's containers with it",
				"uid", w.uid, "err", err)
		}
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return "", err
	}
	w.r.log.Info("pods: started the holder of a shared PID namespace", "uid", w.uid, "pid", pid)
	return fmt.Sprintf("/proc/%d/ns/pid", pid), nil
}

// holder returns the PID in pidFile if that process is this pod's
// holder (its command line says so: a PID reused by another process is
// not taken for it).
func (w *worker) holder(pidFile string) (int, bool) {
	b, err := os.ReadFile(pidFile)
	if err != nil || len(b) > 20 {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := bytes.Split(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0})
	if len(args) != 3 || string(args[1]) != pauseArg || string(args[2]) != w.uid {
		return 0, false
	}
	return pid, true
}

// stopPIDNamespace kills the pod's PID namespace holder, if one runs.
func (w *worker) stopPIDNamespace(dir string) error {
	pidFile := filepath.Join(dir, "pidns.pid")
	pid, ok := w.holder(pidFile)
	if !ok {
		return nil
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("stop the PID namespace holder %d: %w", pid, err)
	}
	return nil
}
