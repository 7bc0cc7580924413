package harness

import (
	"fmt"
	"log/slog"
	"testing"
)

// recordingTB is a test that keeps what it is told to log and its
// cleanups, so a test can end it when it chooses.
type recordingTB struct {
	testing.TB
	logs     []string
	cleanups []func()
}

func (r *recordingTB) Log(args ...any)  { r.logs = append(r.logs, fmt.Sprint(args...)) }
func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recordingTB) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// A goroutine that logs after its test has ended (CI saw a hashicorp/raft
// connection handler do it) must not touch the finished test: testing
// reports that as a race, or panics when no parent test still runs.
func TestTestLogger_DropsWhatComesAfterTheTest(t *testing.T) {
	t.Setenv("DIALKV_TEST_LOG", "")
	rec := &recordingTB{TB: t}
	log := TestLogger(rec, slog.LevelInfo)
	log.Debug("below the level")
	log.Info("during the test")
	rec.end()
	log.Error("after the test")
	if len(rec.logs) != 1 {
		t.Fatalf("the test got %d lines, want only the one logged during it at its level: %q", len(rec.logs), rec.logs)
	}
}
