package jepsen

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestCrashLoop_ShortRunLosesNoAcknowledgedWrite is the short crash loop
// of `make test` (make crash-loop runs the long one): 3 nodes, at least
// 24 ranges under writes, 6 cycles of kill -9 and restart from a fixed
// seed, every other one killing two nodes at once, and two killing a
// range's leader during its split, then every checker. The run must also have exercised what it claims, and its
// checkers must catch a lost write and an invented value planted into the
// history it recorded.
func TestCrashLoop_ShortRunLosesNoAcknowledgedWrite(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	out, err := os.MkdirTemp("", "dialkv-crashloop-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const cycles = 6
	rep, err := CrashLoop(ctx, CrashLoopConfig{
		KvdPath: kvdBin, Out: out, Cycles: cycles, Seed: 20261123,
		DownMin: time.Second, DownMax: 3 * time.Second, UpMin: 300 * time.Millisecond, UpMax: time.Second,
		SplitEvery: 3, MajorityEvery: 2,
		Logf: func(format string, args ...any) {
			t.Helper()
			t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
		},
	})
	if err != nil {
		t.Fatalf("crash loop: %v (results in %s)", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("results kept in %s", out)
			return
		}
		os.RemoveAll(out)
	})
	t.Log(rep.SummaryLine())
	for _, r := range rep.Results {
		if r.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v; notes %v", r.Checker, r.Verdict, r.ViolationCount, r.Violations[:min(3, len(r.Violations))], r.Notes)
		}
	}
	if !rep.Valid {
		t.Errorf("the report is not valid")
	}
	// The run exercised what it claims.
	if rep.Cycles != cycles || rep.MajorityKills != cycles/2 || rep.Kills != cycles+cycles/2 {
		t.Errorf("%d cycles, %d kills, %d of a majority; want %d, %d, %d", rep.Cycles, rep.Kills, rep.MajorityKills, cycles, cycles+cycles/2, cycles/2)
	}
	if rep.KillsDuringSplit < 2 {
		t.Errorf("%d kills during a split, want 2", rep.KillsDuringSplit)
	}
	if rep.RangesWritten < 24 || rep.RangesCompared < 25 {
		t.Errorf("writes reached %d ranges and %d were compared, want at least 24 and 25", rep.RangesWritten, rep.RangesCompared)
	}
	if rep.AckedChecked < 500 || rep.Writes.Info == 0 {
		t.Errorf("%d acknowledged writes checked and %d indeterminate, want at least 500 and some: the kills must land on writes in flight", rep.AckedChecked, rep.Writes.Info)
	}

	// The checkers catch a lost write and a value nobody wrote in this
	// very history.
	planted, lostKey, inventedKey := plantedHistory(rep.History)
	if planted == nil {
		t.Fatal("no two register keys with a final read to plant faults on")
	}
	caught := map[string]map[string]bool{}
	for _, r := range Check(planted, CheckOptions{LinearizableTimeout: time.Minute}) {
		caught[r.Checker] = map[string]bool{}
		for _, v := range r.Violations {
			caught[r.Checker][v.Key] = true
		}
	}
	if !caught[CheckDurability][lostKey] {
		t.Errorf("durability did not report the lost write planted on %s: %v", lostKey, caught[CheckDurability])
	}
	if !caught[CheckStale][inventedKey] || !caught[CheckLinearizable][inventedKey] {
		t.Errorf("the stale and linearizable checkers did not both report the invented value planted on %s: %v, %v", inventedKey, caught[CheckStale], caught[CheckLinearizable])
	}
}
