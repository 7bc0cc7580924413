//go:build !linux

package main

import "syscall"

// nodeSysProcAttr: only Linux can tie a child's life to its parent's
// (Pdeathsig); elsewhere the parent stops its nodes by PID on its way out.
func nodeSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
