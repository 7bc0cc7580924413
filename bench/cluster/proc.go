package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const DefaultStopTimeout = 10 * time.Second

// Proc is one server process started by this package.
type Proc struct {
	Name    string
	LogPath string
	proc    *harness.Process
}

// startProc runs path with args, stdout and stderr appended to logPath.
func startProc(name, logPath, path string, args ...string) (*Proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A group of its own, so a Ctrl-C meant for the benchmark does not
	// reach the servers before the benchmark stops them; SIGKILL from the
	// kernel so they do not outlive a benchmark that was killed outright.
	hp, err := harness.Start(cmd, harness.ProcOptions{DeathSignal: syscall.SIGKILL})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &Proc{Name: name, LogPath: logPath, proc: hp}, nil
}

// PID returns the process id.
func (p *Proc) PID() int { return p.proc.PID() }

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) { return p.proc.Exited() }

// Stop sends SIGTERM to the process (by PID), waits up to timeout, then
// sends SIGKILL (an error: harness.ErrKilled). It is a no-op on a process
// that has already ended.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.proc.Stop(timeout); err != nil {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID(), err)
	}
	return nil
}

// Memory is a process's resident set, from /proc/PID/status.
type Memory struct {
	// PeakRSS is VmHWM, the high-water mark of the resident set.
	PeakRSS int64
	// RSS is VmRSS, the resident set now.
	RSS int64
}

// Memory reads the process's VmHWM and VmRSS.
func (p *Proc) Memory() (Memory, error) {
	return ReadMemory(p.PID())
}

// ReadMemory reads VmHWM and VmRSS of pid (Linux).
func ReadMemory(pid int) (Memory, error) {
	info, err := ReadProc(pid)
	if err != nil {
		return Memory{}, err
	}
	return Memory{PeakRSS: info.PeakRSS, RSS: info.RSS}, nil
}

// LogTail returns the last n lines of the process's log.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// WorkDir returns dir, created if missing, or a new temporary directory
// named after prefix when dir is empty: where a benchmark keeps its
// servers' data and logs.
func WorkDir(dir, prefix string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", prefix+"-")
	}
	return dir, os.MkdirAll(dir, 0o755)
}
