package main

import (
	"math"
	"testing"
	"time"

	"github.com/dialkv/dialkv/bench/workload"
)

// result makes a Result of n operations of lat each over elapsed.
func result(t *testing.T, n int64, lat, elapsed time.Duration) *workload.Result {
	t.Helper()
	h := workload.NewHistogram()
	if err := h.RecordValues(lat.Microseconds(), n); err != nil {
		t.Fatal(err)
	}
	enc, err := workload.EncodeHistogram(h)
	if err != nil {
		t.Fatal(err)
	}
	return &workload.Result{ElapsedSec: elapsed.Seconds(), Histogram: enc,
		Total: workload.Summarize(h, 0, 0, elapsed)}
}

func TestSummarize_MergesRoundsAndTakesTheRatio(t *testing.T) {
	runs := []runRecord{
		{Workload: "put-c1", Round: 1, System: "dialkv", Result: result(t, 100, time.Millisecond, time.Second)},
		{Workload: "put-c1", Round: 1, System: "etcd", Result: result(t, 50, 2*time.Millisecond, time.Second)},
		{Workload: "put-c1", Round: 2, System: "dialkv", Result: result(t, 300, 4*time.Millisecond, time.Second)},
		{Workload: "put-c1", Round: 2, System: "etcd", Result: result(t, 150, 2*time.Millisecond, time.Second)},
		{Workload: "put-c64", Round: 1, System: "dialkv", Result: result(t, 10, time.Millisecond, time.Second)},
	}
	rows, err := summarize([]string{"put-c1", "put-c64"}, runs)
	if err != nil {
		t.Fatal(err)
	}
	d, e := rows[0].Systems["dialkv"], rows[0].Systems["etcd"]
	if d.Ops != 400 || d.OpsPerSec != 200 || e.OpsPerSec != 100 || rows[0].Ratio != 2 {
		t.Fatalf("dialkv %+v etcd %+v ratio %v; want 200 vs 100 ops/s, ratio 2", d, e, rows[0].Ratio)
	}
	// 300 of 400 dialkv operations took 4 ms: p99 is 4 ms, not an average.
	if math.Abs(d.P99Ms-4) > 0.01 {
		t.Fatalf("merged dialkv p99 %v ms, want 4", d.P99Ms)
	}
	if !math.IsNaN(rows[1].Ratio) || rows[1].RatioJSON != nil {
		t.Fatalf("ratio without etcd runs: %v, want NaN and none in JSON", rows[1].Ratio)
	}
}
