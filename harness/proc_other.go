//go:build !linux

package harness

import "syscall"

// setProcAttr gives the child a process group of its own. Only Linux can
// tie a child's life to its parent's (Pdeathsig): elsewhere the parent
// must stop its children by PID on its way out.
func setProcAttr(a *syscall.SysProcAttr, _ syscall.Signal) {
	a.Setpgid = true
}
