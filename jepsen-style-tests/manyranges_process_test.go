package jepsen

import (
	"testing"
	"time"
)

// TestSuite_ManyRanges is issue 13's many-range run in short, for `make
// test`: 3 nodes whose workload key space is pre-split into 32 ranges, one
// partition and one kill -9 (never composed), then every checker; the
// replicas checker must have compared every range, and the writes must
// have landed in many of them.
func TestSuite_ManyRanges(t *testing.T) {
	const ranges = 32
	rep := runSuite(t, Config{
		Nodes:    3,
		Duration: 22 * time.Second,
		Nemeses:  []string{NemIsolate, NemKill},
		Seed:     20261203,
		Ranges:   ranges,
		// Registers change generation every 10s, so that 22s of keys hold
		// the 31 split points (see presplitPoints) and each key's
		// history stays short for porcupine.
		Workload: WorkloadConfig{RegisterLifetime: 10 * time.Second},
		Schedule: Schedule{HealthyMin: 2 * time.Second, HealthyMax: 3 * time.Second, FaultMin: 5 * time.Second, FaultMax: 6 * time.Second, ComposeRatio: -1},
	})
	for _, r := range rep.Results {
		if r.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v; notes %v", r.Checker, r.Verdict, r.ViolationCount, r.Violations[:min(3, len(r.Violations))], r.Notes)
		}
	}
	rc := rep.Summary.Ranges
	if rc == nil {
		t.Fatal("the summary counts no ranges")
	}
	if rc.AtStart != ranges || rc.AtEnd < ranges || rc.Compared != rc.AtEnd {
		t.Errorf("ranges: %s; want %d at the start and every one compared", rc, ranges)
	}
	kinds := map[string]int{}
	for _, f := range rep.History.Faults {
		kinds[f.Name]++
	}
	if kinds[NemPartition] == 0 || kinds[NemKill] == 0 {
		t.Errorf("want a partition and a kill, got faults %v", kinds)
	}
	// The pre-split must spread the writes, not only make empty ranges.
	written := map[uint64]bool{}
	for _, o := range rep.History.ClientOps() {
		if o.Type == OK && isWriteF(o.F) && o.RangeID != 0 {
			written[o.RangeID] = true
		}
	}
	if len(written) < ranges/2 {
		t.Errorf("acknowledged writes landed in %d ranges, want at least %d", len(written), ranges/2)
	}
	t.Logf("%s; writes in %d ranges; faults %v", rc, len(written), kinds)
}
