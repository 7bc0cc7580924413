package main

import "syscall"

// nodeSysProcAttr gives each node of `kvd cluster` a process group of its
// own (a Ctrl-C on the terminal reaches only the parent, which then stops
// each node by PID) and asks the kernel to send the node SIGTERM if the
// parent dies without stopping it (kill -9, a crash): no node outlives the
// cluster that started it, and each still shuts down cleanly.
func nodeSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
