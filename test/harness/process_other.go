//go:build !linux

package harness

import "syscall"

// sysProcAttr puts a child in its own process group. Without Linux's
// PR_SET_PDEATHSIG children can outlive a crashed test here.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
