package harness

import "syscall"

// setProcAttr gives the child a process group of its own and asks the
// kernel to send it sig when the parent dies. Strictly, Pdeathsig fires
// when the OS thread that started the child exits. The Go runtime ends a
// thread only when a goroutine that locked it (runtime.LockOSThread) exits
// still locked: do not call Start from such a goroutine.
func setProcAttr(a *syscall.SysProcAttr, sig syscall.Signal) {
	a.Setpgid = true
	a.Pdeathsig = sig
}
