//go:build !linux

package jepsen

import "syscall"

// sysProcAttr puts each node in its own process group, so a Ctrl-C on the
// terminal reaches only the harness, which then stops nodes by PID.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
