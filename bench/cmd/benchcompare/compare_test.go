package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

func TestScaleRows_ComparesEachMultiRangeWorkloadWithItsSingleRangeBase(t *testing.T) {
	runs := []runRecord{
		{Workload: "put-c64", Round: 1, System: "dialkv", Result: result(t, 100, 4*time.Millisecond, time.Second)},
		{Workload: "put-c64-r16", Round: 1, System: "dialkv", Result: result(t, 250, 2*time.Millisecond, time.Second)},
		{Workload: "get-linearizable-c64-r16", Round: 1, System: "dialkv", Result: result(t, 50, time.Millisecond, time.Second)},
	}
	rows, err := summarize([]string{"put-c64", "put-c64-r16", "get-linearizable-c64-r16"}, runs)
	if err != nil {
		t.Fatal(err)
	}
	got := scaleRows(rows)
	// get-linearizable-c64 did not run: no line for its -r16 form.
	if len(got) != 1 {
		t.Fatalf("scale rows %+v, want one for put-c64-r16", got)
	}
	s := got[0]
	if s.Workload != "put-c64-r16" || s.Base != "put-c64" || s.Ratio != 2.5 ||
		math.Abs(s.P99Ms-2) > 0.01 || math.Abs(s.BaseP99Ms-4) > 0.01 {
		t.Fatalf("got %+v, want put-c64-r16/put-c64 ratio 2.5, p99 2 vs 4 ms", s)
	}
}

// fakeBinaries makes empty kvd, kvbench and etcdnode files for parseFlags.
func fakeBinaries(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, name := range []string{"kvd", "kvbench", "etcdnode"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-"+name, p)
	}
	return args
}

func TestParseFlags_RunsTheSingleRangeWorkloadsFirst(t *testing.T) {
	o, err := parseFlags(append(fakeBinaries(t), "-workloads", "put-c64-r16,put-c1,get-linearizable-c64-r16,put-c64"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"put-c1", "put-c64", "put-c64-r16", "get-linearizable-c64-r16"}
	if !slices.Equal(o.workloads, want) {
		t.Fatalf("workloads run in the order %v, want %v", o.workloads, want)
	}
}

func TestParseFlags_RefusesFewerKeysThanRanges(t *testing.T) {
	_, err := parseFlags(append(fakeBinaries(t), "-workloads", "put-c64-r16", "-keys", "15"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-keys 15") {
		t.Fatalf("err = %v, want -keys 15 refused for 16 ranges", err)
	}
	if _, err := parseFlags(append(fakeBinaries(t), "-workloads", "put-c64", "-keys", "15"), io.Discard); err != nil {
		t.Fatalf("15 keys for a single-range workload: %v", err)
	}
}

func TestPrintSummary_TxnAcrossRangesIsAWorkloadLineNotARatio(t *testing.T) {
	failed := func(r *workload.Result, n int64) *workload.Result { r.Total.CompareFailed = n; return r }
	runs := []runRecord{
		{Workload: "txn-c64", Round: 1, System: "dialkv", Result: failed(result(t, 300, 2*time.Millisecond, time.Second), 64)},
		{Workload: "txn-c64", Round: 1, System: "etcd", Result: failed(result(t, 200, 3*time.Millisecond, time.Second), 64)},
		{Workload: "txn-c64-x2", Round: 1, System: "dialkv", Result: failed(result(t, 150, 4*time.Millisecond, time.Second), 60)},
		{Workload: "txn-c64-x2", Round: 2, System: "dialkv", Result: failed(result(t, 50, 4*time.Millisecond, time.Second), 4)},
	}
	names := []string{"txn-c64", "txn-c64-x2"}
	rows, err := summarize(names, runs)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	b := &bench{o: &options{rounds: 2}, out: &out, log: io.Discard}
	b.printSummary(rows)
	for _, want := range []string{
		// HDR histograms keep 3 significant digits: 3 ms reads 3.001.
		"RATIO txn-c64 1.500 p99 2.000 vs 3.001\n",
		"WORKLOAD txn-c64-x2 ops/s 100 p50 4.001 p99 4.001 errors 0 compare_failed 64\n",
		"SCALE txn-c64-x2/txn-c64 0.333 p99 4.001 vs 2.000\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "RATIO txn-c64-x2") {
		t.Errorf("a RATIO line for a dialkv-only workload:\n%s", out.String())
	}
}

func TestParseFlags_TxnWorkloadsNeedKeysForEveryClient(t *testing.T) {
	o, err := parseFlags(append(fakeBinaries(t), "-workloads", "txn-c64-x4,txn-c64,txn-c64-x2,put-c64-r16"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"txn-c64", "txn-c64-x4", "txn-c64-x2", "put-c64-r16"}
	if !slices.Equal(o.workloads, want) {
		t.Fatalf("workloads run in the order %v, want %v", o.workloads, want)
	}
	// 64 clients with 4 keys of their own each need 256 keys.
	_, err = parseFlags(append(fakeBinaries(t), "-workloads", "txn-c64-x4", "-keys", "255"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-keys 255") {
		t.Fatalf("err = %v, want -keys 255 refused for txn-c64-x4", err)
	}
	if _, err := parseFlags(append(fakeBinaries(t), "-workloads", "txn-c64", "-keys", "128"), io.Discard); err != nil {
		t.Fatalf("128 keys for txn-c64: %v", err)
	}
}

func TestCostRows_MergeRoundsAndDivideByOperations(t *testing.T) {
	cost := func(cpu time.Duration, members ...time.Duration) *runCost {
		return &runCost{ServerCPU: cpu, MemberCPU: members, BusiestCPU: slices.Max(members), BenchCPU: cpu / 4, ContextSwitches: 40,
			Fsyncs: 10, PeerBytes: 4000, LogRecords: 30, Messages: 20, SocketWrites: 10}
	}
	runs := []runRecord{
		{Workload: "put-c64-r16", Round: 1, System: "dialkv", Result: result(t, 100, time.Millisecond, time.Second),
			Cost: cost(20*time.Millisecond, 10*time.Millisecond, 6*time.Millisecond, 4*time.Millisecond)},
		{Workload: "put-c64-r16", Round: 2, System: "dialkv", Result: result(t, 100, time.Millisecond, time.Second),
			Cost: cost(20*time.Millisecond, 2*time.Millisecond, 6*time.Millisecond, 12*time.Millisecond)},
		{Workload: "put-c64-r16", Round: 1, System: "etcd", Result: result(t, 50, time.Millisecond, time.Second),
			Cost: &runCost{ServerCPU: 10 * time.Millisecond, Fsyncs: 25}},
		// A run the servers could not be sampled around adds nothing.
		{Workload: "put-c64-r16", Round: 2, System: "etcd", Result: result(t, 50, time.Millisecond, time.Second)},
	}
	rows := costRows([]string{"put-c64-r16"}, runs)
	if len(rows) != 2 {
		t.Fatalf("%d rows, want dialkv's and etcd's", len(rows))
	}
	d, e := rows[0], rows[1]
	// The busiest member of each round counts whole, 10 and 12 ms, though
	// it changed between the rounds.
	if d.Ops != 200 || d.Cost.ServerCPU != 40*time.Millisecond || d.Cost.BusiestCPU != 22*time.Millisecond {
		t.Fatalf("dialkv row %+v", d)
	}
	want := "COST put-c64-r16 dialkv server_cpu_us 200.0 busiest_server_cpu_us 110.0 bench_cpu_us 50.0 context_switches 0.4 fsyncs 0.100 peer_bytes 40" +
		" messages 0.20 bytes_per_message 200 messages_per_write 2.0 records_per_fsync 3.0"
	if got := costLine(d); got != want {
		t.Fatalf("dialkv line\n%s\nwant\n%s", got, want)
	}
	want = "COST put-c64-r16 etcd server_cpu_us 200.0 busiest_server_cpu_us 0.0 bench_cpu_us 0.0 context_switches 0.0 fsyncs 0.500 peer_bytes 0"
	if got := costLine(e); e.Ops != 50 || got != want {
		t.Fatalf("etcd row of %d ops, line\n%s\nwant\n%s", e.Ops, got, want)
	}
}
