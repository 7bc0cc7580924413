package jepsen

import "syscall"

// sysProcAttr puts each node in its own process group (a Ctrl-C on the
// terminal reaches only the harness, which then stops nodes by PID) and asks
// the kernel to SIGKILL the node if the harness dies without calling Close,
// so a crashed or timed-out test leaves no orphan kvd behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
