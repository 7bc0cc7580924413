package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeCleanupTB records what StartServer reports and the cleanups it
// registers, which the test runs itself.
type fakeCleanupTB struct {
	fakeTB
	errors   []string
	cleanups []func()
}

func (f *fakeCleanupTB) Errorf(format string, a ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}
func (f *fakeCleanupTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func (f *fakeCleanupTB) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func TestBuildBinaries(t *testing.T) {
	dir := t.TempDir()
	bins := BuildBinaries(t, dir, "./testdata/hello")
	if want := filepath.Join(dir, "hello"); len(bins) != 1 || bins[0] != want {
		t.Fatalf("built %v, want [%s]", bins, want)
	}
	if out, err := exec.Command(bins[0]).Output(); err != nil || string(out) != "hello\n" {
		t.Fatalf("the built binary said %q, %v", out, err)
	}

	var tb fakeTB
	if bins := BuildBinaries(&tb, dir, "./testdata/hello", "./testdata/nonexistent"); bins != nil {
		t.Errorf("a failed build returned %v", bins)
	}
	if got := strings.Join(tb.fatals, "\n"); !strings.Contains(got, "go build ./testdata/nonexistent: exit status 1") {
		t.Errorf("failures %q, want the failed build named", got)
	}
}

func TestStartServer(t *testing.T) {
	for _, tc := range []struct {
		name, mode, ready string
		wantFail          string // "": the server starts
	}{
		{name: "says it is ready", mode: "term-ok", ready: "ready"},
		{name: "exits first", mode: "exit3", ready: "ready", wantFail: "it exited: exit status 3"},
		{name: "never says it", mode: "term-ok", ready: "listening", wantFail: "condition not met within 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), childModeEnv+"="+tc.mode)
			logPath := filepath.Join(t.TempDir(), "out", "server.log")
			var tb fakeCleanupTB
			p := StartServer(&tb, cmd, ProcOptions{DeathSignal: syscall.SIGTERM}, logPath, tc.ready, 500*time.Millisecond)
			if len(tb.cleanups) != 1 {
				t.Fatalf("%d cleanups registered, want 1 that stops the server", len(tb.cleanups))
			}
			got := strings.Join(tb.fatals, "\n")
			if tc.wantFail == "" {
				if got != "" || p == nil {
					t.Fatalf("StartServer = %v, failures %q", p, got)
				}
				if done, _ := p.Exited(); done {
					t.Fatal("the server has exited")
				}
			} else if p != nil || !strings.Contains(got, tc.wantFail) {
				t.Fatalf("StartServer = %v, failures %q; want %q", p, got, tc.wantFail)
			}
			tb.cleanup()
			if len(tb.errors) != 0 {
				t.Errorf("stopping: %v", tb.errors)
			}
			if p != nil && !p.Told() {
				t.Error("the cleanup did not stop the server")
			}
		})
	}
}
