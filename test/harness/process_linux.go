package harness

import "syscall"

// sysProcAttr puts a child in its own process group, so signals reach
// whatever it forks, and has the kernel SIGKILL it when the thread that
// started it dies, so nothing outlives a crashed test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
