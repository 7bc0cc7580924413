package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"
)

const (
	// buildTimeout bounds one `go build` of BuildBinaries: a cold build of
	// kvd on a loaded machine takes minutes.
	buildTimeout = 5 * time.Minute
	// serverStopGrace is how long StartServer's cleanup waits after
	// SIGTERM: a server's clean shutdown, which may flush its stores.
	serverStopGrace = 30 * time.Second
	// serverPollInterval is StartServer's ceiling between reads of the
	// output.
	serverPollInterval = 200 * time.Millisecond
)

// CleanupTB is the part of testing.TB that StartServer needs: it stops
// the server when the test ends.
type CleanupTB interface {
	TB
	Errorf(format string, args ...any)
	Cleanup(func())
}

// BuildBinaries builds each Go package of pkgs (an import path, or a path
// relative to the test's directory) into dir, named after the package's
// last path element, and returns their paths in pkgs' order. They are
// built without -race whatever the test's flags: they run as real
// processes the test only talks to. A failed build fails tb.
func BuildBinaries(tb TB, dir string, pkgs ...string) []string {
	tb.Helper()
	out := make([]string, len(pkgs))
	for i, pkg := range pkgs {
		out[i] = filepath.Join(dir, path.Base(pkg))
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		b, err := exec.CommandContext(ctx, "go", "build", "-o", out[i], pkg).CombinedOutput()
		cancel()
		if err != nil {
			tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
			return nil
		}
	}
	return out
}

// StartServer starts cmd as Start does, with its stdout and stderr in the
// file logPath, and waits up to timeout until that output contains ready:
// a server that says when it can serve, such as `kvd cluster`. The
// output, not a health endpoint, is awaited because it is what a user
// waits for too. The server is stopped by PID when the test ends (SIGTERM,
// then SIGKILL after serverStopGrace, which is no failure). A server that
// exits or stays silent fails tb with its output.
func StartServer(tb CleanupTB, cmd *exec.Cmd, o ProcOptions, logPath, ready string, timeout time.Duration) *Process {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		tb.Fatalf("%v", err)
		return nil
	}
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("%v", err)
		return nil
	}
	cmd.Stdout, cmd.Stderr = f, f
	p, err := Start(cmd, o)
	f.Close() // the child has its own copy
	if err != nil {
		tb.Fatalf("start %s: %v", cmd, err)
		return nil
	}
	tb.Cleanup(func() {
		if err := p.Stop(serverStopGrace); err != nil && !errors.Is(err, ErrKilled) {
			tb.Errorf("stop %s (pid %d): %v", cmd, p.PID(), err)
		}
	})
	err = Poll(context.Background(), timeout, serverPollInterval, func(context.Context) (bool, error) {
		b, _ := os.ReadFile(logPath)
		if done, err := p.Exited(); done {
			if err == nil {
				err = errors.New("status 0")
			}
			return false, fmt.Errorf("it exited: %w", err)
		}
		return bytes.Contains(b, []byte(ready)), nil
	})
	if err != nil {
		b, _ := os.ReadFile(logPath)
		tb.Fatalf("%s not ready: %v; its output:\n%s", cmd, err, b)
		return nil
	}
	return p
}
