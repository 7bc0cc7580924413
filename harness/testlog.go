package harness

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestLogger returns a logger that writes to t's log at level and above
// (every level when DIALKV_TEST_LOG=debug). Once t's cleanups run, it
// drops what it is given: a goroutine that ends after its test (such as a
// hashicorp/raft NetworkTransport handler noticing its connection closed)
// must not write to a finished test, which testing reports as a race or
// a panic. Anything that outlives the test for good is goleak's to find.
func TestLogger(t testing.TB, level slog.Level) *slog.Logger {
	if os.Getenv("DIALKV_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	w := &testLogWriter{t: t}
	t.Cleanup(w.finish)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool // guarded by mu: t's cleanups have begun
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
