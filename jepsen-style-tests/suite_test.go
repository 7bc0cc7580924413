package jepsen

import (
	"context"
	"os"
	"testing"
	"time"
)

// runSuite runs the Jepsen-style suite for a test, keeping the results
// folder only when the test fails.
func runSuite(t *testing.T, cfg Config) *Report {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	out, err := os.MkdirTemp("", "dialkv-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	cfg.KvdPath, cfg.Out = kvdBin, out
	cfg.Logf = func(format string, args ...any) {
		t.Helper()
		t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v (results in %s)", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("results kept in %s", out)
			return
		}
		os.RemoveAll(out)
	})
	t.Log(rep.VerdictLine())
	return rep
}

// TestSuite_Short is the suite's short run for `make test`: 3 nodes, about
// 75 seconds of traffic at every level, watchers and leases under
// partitions, kill -9 and pauses from a fixed seed, then every checker.
// Each range keeps only 32 KiB of past events, so that every state commit
// trims the change feeds the watchers resume from.
func TestSuite_Short(t *testing.T) {
	rep := runSuite(t, Config{
		Nodes:     3,
		Duration:  75 * time.Second,
		Nemeses:   []string{NemPartition, NemKill, NemPause},
		Seed:      20261122,
		Workloads: []string{WorkloadRegister, WorkloadWatch, WorkloadLease},
		Watch:     WatchConfig{RetentionBytes: 32 << 10},
		Schedule:  Schedule{HealthyMin: 3 * time.Second, HealthyMax: 6 * time.Second, FaultMin: 4 * time.Second, FaultMax: 8 * time.Second},
	})
	for _, r := range rep.Results {
		if r.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v; notes %v", r.Checker, r.Verdict, r.ViolationCount, r.Violations[:min(3, len(r.Violations))], r.Notes)
		}
	}
	// The run must have exercised what it claims to.
	kinds := map[string]int{}
	for _, f := range rep.History.Faults {
		kinds[f.Name]++
	}
	for _, want := range []string{NemPartition, NemKill, NemPause} {
		if kinds[want] == 0 && kinds["composed"] == 0 {
			t.Errorf("no %s fault in the schedule: %v", want, kinds)
		}
	}
	for _, level := range Levels {
		if c := rep.Summary.Ops.ByCategory["read "+level]; c == nil || c.OK == 0 {
			t.Errorf("no successful %s read", level)
		}
	}
	// The watch and lease checkers ran, on something.
	byName := map[string]*CheckResult{}
	for _, r := range rep.Results {
		byName[r.Checker] = r
	}
	for _, name := range []string{CheckWatch, CheckLease} {
		if r := byName[name]; r == nil || r.Checked == 0 {
			t.Errorf("checker %s did not run or checked nothing: %+v", name, r)
		} else {
			t.Logf("checker %s: checked %d; %v", name, r.Checked, r.Notes)
		}
	}
	for _, r := range rep.Results {
		for issue, n := range r.Known {
			t.Logf("KNOWN SERVER BUG tolerated %d times by checker %s: %s: %s", n, r.Checker, issue, KnownIssueDocs[issue])
		}
	}
	t.Logf("faults %v; availability by phase:\n%s", kinds, rep.Summary.Table())
}

// TestSuite_Txn is the transaction workloads' short run for `make test`:
// 3 nodes, 30 seconds of bank transfers and list appends across ranges
// under partitions, kill -9 and kill-coordinator, then every checker;
// the bank and append checkers must have checked something, and a
// transaction must have been cut by kill-coordinator.
func TestSuite_Txn(t *testing.T) {
	rep := runSuite(t, Config{
		Nodes:     3,
		Duration:  30 * time.Second,
		Nemeses:   []string{NemPartition, NemKill, NemKillCoord},
		Seed:      20261123,
		Workloads: []string{WorkloadBank, WorkloadAppend},
		Schedule:  Schedule{HealthyMin: 2 * time.Second, HealthyMax: 4 * time.Second, FaultMin: 3 * time.Second, FaultMax: 6 * time.Second, ComposeRatio: -1},
	})
	byName := map[string]*CheckResult{}
	for _, r := range rep.Results {
		byName[r.Checker] = r
		if r.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v; notes %v", r.Checker, r.Verdict, r.ViolationCount, r.Violations[:min(3, len(r.Violations))], r.Notes)
		}
	}
	for _, name := range []string{CheckBank, CheckAppend} {
		if r := byName[name]; r == nil || r.Checked == 0 {
			t.Errorf("checker %s did not run or checked nothing: %+v", name, r)
		} else {
			t.Logf("checker %s: checked %d; %v", name, r.Checked, r.Notes)
		}
	}
	cut := 0
	for _, o := range rep.History.Ops {
		if o.Process == KillCoordProcess && o.F != OpTxnProbe {
			cut++
		}
	}
	if cut == 0 {
		t.Errorf("no transaction cut by %s; faults %v", NemKillCoord, rep.History.Faults)
	}
	for _, cat := range []string{"txn " + OpTransfer, "txn " + OpReadAll, "txn " + OpListTxn} {
		if c := rep.Summary.Ops.ByCategory[cat]; c == nil || c.OK == 0 {
			t.Errorf("no successful %s", cat)
		}
	}
	t.Logf("availability by phase:\n%s", rep.Summary.Table())
}
