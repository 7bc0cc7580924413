package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary runs as a child process when childModeEnv is set (see
// TestMain): it prints "ready" once its signal handling is in place, then
// behaves as the mode says.
const (
	childModeEnv = "HARNESS_TEST_CHILD"
	// childFileEnv is where a "record-term" child writes "SIGTERM".
	childFileEnv = "HARNESS_TEST_FILE"
	// childDeathEnv is the death signal a "parent" child gives its own
	// child.
	childDeathEnv = "HARNESS_TEST_DEATH"
)

func runChild(mode string) int {
	switch mode {
	case "exit3":
		return 3
	case "term-ok", "record-term":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println("ready")
		<-term
		if mode == "record-term" {
			if err := os.WriteFile(os.Getenv(childFileEnv), []byte("SIGTERM"), 0o644); err != nil {
				return 1
			}
		}
		return 0
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "parent":
		// Starts a record-term child with the death signal of
		// childDeathEnv, prints its PID and waits to be killed.
		sig, _ := strconv.Atoi(os.Getenv(childDeathEnv))
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childModeEnv+"=record-term")
		cmd.Stdout = os.Stderr // its "ready" is not for the test
		p, err := Start(cmd, ProcOptions{DeathSignal: syscall.Signal(sig)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(p.PID())
		time.Sleep(time.Hour)
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
	return 2
}

// child is a started test child and its output.
type child struct {
	*Process
	out    *bufio.Reader
	outF   *os.File
	stderr *syncBuffer
}

// syncBuffer is a bytes.Buffer that exec's copying goroutine may write
// while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startChild starts the test binary in mode, with env added, and stops it
// by PID when the test ends.
func startChild(t *testing.T, mode string, o ProcOptions, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), childModeEnv+"="+mode), env...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	stderr := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = w, stderr
	p, err := Start(cmd, o)
	w.Close() // the child has its own copy
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("kill pid %d: %v", p.PID(), err)
		}
	})
	return &child{Process: p, out: bufio.NewReader(r), outF: r, stderr: stderr}
}

// line reads the child's next line of output, within 20 s.
func (c *child) line(t *testing.T) string {
	t.Helper()
	c.outF.SetReadDeadline(time.Now().Add(20 * time.Second))
	s, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading pid %d's output: %v (stderr: %s)", c.PID(), err, c.stderr)
	}
	return strings.TrimSpace(s)
}

func (c *child) ready(t *testing.T) {
	t.Helper()
	if got := c.line(t); got != "ready" {
		t.Fatalf("pid %d said %q, want ready", c.PID(), got)
	}
}

func TestStart_PutsTheChildInAProcessGroupOfItsOwn(t *testing.T) {
	c := startChild(t, "term-ok", ProcOptions{})
	c.ready(t)
	pgid, err := syscall.Getpgid(c.PID())
	if err != nil {
		t.Fatal(err)
	}
	if pgid != c.PID() || pgid == syscall.Getpgrp() {
		t.Fatalf("child pid %d is in group %d (ours %d), want a group of its own", c.PID(), pgid, syscall.Getpgrp())
	}
}

func TestProcessStop_EndsTheChildAndSaysHow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    string
		opts    ProcOptions
		grace   time.Duration
		pause   bool // SIGSTOP the child first
		wantErr error
		// wantExit is the child's exit as ProcessState prints it.
		wantExit   string
		wantStderr string
	}{
		{name: "exits on SIGTERM", mode: "term-ok", grace: 10 * time.Second, wantExit: "exit status 0"},
		{name: "paused child still gets SIGTERM", mode: "term-ok", grace: 10 * time.Second, pause: true, wantExit: "exit status 0"},
		{name: "ignores SIGTERM", mode: "ignore-term", grace: 200 * time.Millisecond, wantErr: ErrKilled, wantExit: "signal: killed"},
		{name: "ignores SIGTERM, dumps on SIGQUIT", mode: "ignore-term", grace: 200 * time.Millisecond, opts: ProcOptions{QuitWait: 10 * time.Second},
			wantErr: ErrKilled, wantExit: "exit status 2", wantStderr: "SIGQUIT: quit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startChild(t, tc.mode, tc.opts)
			c.ready(t)
			if tc.pause {
				if err := c.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}
			if c.Told() {
				t.Fatal("Told before Stop")
			}
			start := time.Now()
			err := c.Stop(tc.grace)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Stop: %v, want %v", err, tc.wantErr)
			}
			if done, _ := c.Exited(); !done {
				t.Fatalf("Stop returned after %v with pid %d not reaped", time.Since(start), c.PID())
			}
			if !c.Told() {
				t.Fatal("not Told after Stop")
			}
			if got := c.State().String(); got != tc.wantExit {
				t.Fatalf("exit %q, want %q", got, tc.wantExit)
			}
			if !strings.Contains(c.stderr.String(), tc.wantStderr) {
				t.Fatalf("stderr lacks %q:\n%s", tc.wantStderr, c.stderr)
			}
			if err := c.Signal(syscall.SIGTERM); err == nil {
				t.Fatal("signalling a reaped child: no error")
			}
			if err := c.Stop(time.Second); err != nil {
				t.Fatalf("second Stop: %v", err)
			}
		})
	}
}

func TestProcess_AnExitOnItsOwnIsNotTold(t *testing.T) {
	c := startChild(t, "exit3", ProcOptions{})
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("child did not exit")
	}
	done, err := c.Exited()
	var exit *exec.ExitError
	if !done || !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Exited() = %v, %v; want true and exit status 3", done, err)
	}
	if c.Told() {
		t.Fatal("Told, though nothing stopped it")
	}
	if err := c.Stop(time.Second); err != nil {
		t.Fatalf("Stop of an exited child: %v", err)
	}
}

func TestProcessKill_EndsAChildThatIgnoresSIGTERM(t *testing.T) {
	c := startChild(t, "ignore-term", ProcOptions{})
	c.ready(t)
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if got := c.State().String(); got != "signal: killed" || !c.Told() {
		t.Fatalf("after Kill: exit %q, told %v; want signal: killed, told", got, c.Told())
	}
}

// A child must not outlive its parent: when the parent is killed outright,
// the kernel sends the child the death signal.
func TestStart_ChildGetsTheDeathSignalWhenItsParentDies(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig is Linux only")
	}
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		wantTerm bool // the grandchild ran its SIGTERM handler
	}{
		{"SIGKILL by default", 0, false},
		{"SIGTERM when asked", syscall.SIGTERM, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "term")
			parent := startChild(t, "parent", ProcOptions{},
				childDeathEnv+"="+strconv.Itoa(int(tc.sig)), childFileEnv+"="+file)
			pid, err := strconv.Atoi(parent.line(t))
			if err != nil {
				t.Fatalf("parent's output: %v", err)
			}
			t.Cleanup(func() {
				if !gone(pid) { // only when the test failed
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			// The grandchild's "ready" went to the parent's stderr; wait
			// for it, so that its handler is in place.
			Eventually(t, "the grandchild to be ready", 20*time.Second, func() bool {
				return strings.Contains(parent.stderr.String(), "ready")
			})
			if err := parent.Kill(); err != nil {
				t.Fatal(err)
			}
			Eventually(t, fmt.Sprintf("grandchild pid %d to exit", pid), 20*time.Second, func() bool { return gone(pid) })
			_, err = os.Stat(file)
			if gotTerm := err == nil; gotTerm != tc.wantTerm {
				t.Fatalf("grandchild handled SIGTERM: %v, want %v", gotTerm, tc.wantTerm)
			}
		})
	}
}

// gone reports whether pid has exited: no such process, or a zombie that
// whoever adopted it has yet to reap.
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
