package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"
)

// KillWait bounds the wait for a process to exit after SIGKILL: longer
// means it is stuck in the kernel (uninterruptible I/O), and waiting on
// would hang the caller.
const KillWait = 10 * time.Second

// pipeWait is Start's default exec.Cmd.WaitDelay: how long, once the child
// has exited, the reaper waits for the output it copies into a non-file
// Stdout or Stderr. A grandchild that inherited the pipe would otherwise
// keep the child from ever counting as exited.
const pipeWait = 2 * time.Second

// Errors returned by Process.Stop and Process.Kill.
var (
	// ErrKilled: the process did not exit within the grace period after
	// SIGTERM and was killed (it has exited).
	ErrKilled = errors.New("harness: killed after ignoring SIGTERM")
	// ErrStillRunning: the process was still running KillWait after
	// SIGKILL; it has not been reaped.
	ErrStillRunning = errors.New("harness: still running after SIGKILL")
)

// ProcOptions configures Start.
type ProcOptions struct {
	// DeathSignal is what the kernel sends the child when its parent dies
	// without stopping it (Linux's Pdeathsig; elsewhere nothing is sent):
	// SIGKILL when zero. SIGTERM lets it shut down cleanly instead.
	DeathSignal syscall.Signal
	// QuitWait, when positive, makes Stop send SIGQUIT to a process that
	// outlived its grace period and wait up to QuitWait before SIGKILL: a
	// Go program then writes every goroutine's stack to its stderr, which
	// shows where its shutdown hung.
	QuitWait time.Duration
}

// Process is a child started by Start. Its methods are safe for concurrent
// use.
type Process struct {
	cmd  *exec.Cmd
	opts ProcOptions
	done chan struct{} // closed once the child has been reaped
	err  error         // cmd.Wait's result; valid after done
	// told is set before Stop or Kill signals the process: an exit
	// without it is a crash.
	told atomic.Bool
}

// Start starts cmd in a process group of its own, with the death signal of
// o (see ProcOptions), and reaps it in the background when it exits. Any
// SysProcAttr already on cmd is kept, with Setpgid and Pdeathsig set; a
// zero cmd.WaitDelay becomes pipeWait (see exec.Cmd.WaitDelay).
func Start(cmd *exec.Cmd, o ProcOptions) (*Process, error) {
	if o.DeathSignal == 0 {
		o.DeathSignal = syscall.SIGKILL
	}
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = pipeWait
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setProcAttr(cmd.SysProcAttr, o.DeathSignal)
	if err := cmd.Start(); err != nil {
		return nil, err // exec's error names the binary already
	}
	p := &Process{cmd: cmd, opts: o, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited, and if so how (nil for
// status 0; an *exec.ExitError otherwise).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// State is the child's exit state, or nil while it runs.
func (p *Process) State() *os.ProcessState {
	if done, _ := p.Exited(); !done {
		return nil
	}
	return p.cmd.ProcessState
}

// WaitFor waits up to d for the child to exit and reports whether it did.
func (p *Process) WaitFor(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Told reports whether Stop or Kill has been called: a child that exited
// without it exited on its own (a crash, a fatal error).
func (p *Process) Told() bool { return p.told.Load() }

// Signal sends sig to the child by PID (SIGSTOP and SIGCONT pause and
// resume it). Signalling a child that has exited is an error and does
// nothing: its PID may belong to another process by now.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("harness: signal pid %d: %w", p.PID(), err)
	}
	return nil
}

// Kill sends SIGKILL and waits up to KillWait for the child to exit. A
// child that had already exited is not an error.
func (p *Process) Kill() error {
	p.told.Store(true)
	if err := p.cmd.Process.Kill(); err != nil {
		if done, _ := p.Exited(); !done && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("harness: kill pid %d: %w", p.PID(), err)
		}
	}
	if !p.WaitFor(KillWait) {
		return fmt.Errorf("%w: pid %d, %v later", ErrStillRunning, p.PID(), KillWait)
	}
	return nil
}

// Stop ends the child by PID: SIGTERM (and SIGCONT, so that a child paused
// with SIGSTOP can act on it), then, if it is still running after grace,
// SIGQUIT when ProcOptions.QuitWait is set, and SIGKILL. It returns once
// the child has been reaped: nil when it exited within grace of SIGTERM
// (whatever its status: see Exited), ErrKilled when it had to be killed,
// ErrStillRunning when not even SIGKILL ended it within KillWait. A child
// that had already exited is left alone.
func (p *Process) Stop(grace time.Duration) error {
	if done, _ := p.Exited(); done {
		return nil
	}
	p.told.Store(true)
	// Errors are ignored: the only one possible is that the child has
	// exited meanwhile, which the wait below sees.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Process.Signal(syscall.SIGCONT)
	if p.WaitFor(grace) {
		return nil
	}
	if p.opts.QuitWait > 0 {
		p.cmd.Process.Signal(syscall.SIGQUIT)
		if p.WaitFor(p.opts.QuitWait) {
			return fmt.Errorf("%w: pid %d ran %v after SIGTERM; it exited on SIGQUIT", ErrKilled, p.PID(), grace)
		}
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("%w: pid %d ran %v after SIGTERM", ErrKilled, p.PID(), grace)
}
