package bench_test

// The benchmark's smoke test: kvbench, built from this module, against a
// real 3-node kvd cluster for a few seconds per workload. It asserts only
// that work was done without errors; timing belongs to the benchmark
// (`make bench-compare`), never to tests.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/layout"
	"github.com/dialkv/dialkv/bench/workload"
)

// startAttempts bounds retries of a cluster start that lost a race for a
// port picked by cluster.FreePortBase.
const startAttempts = 3

// buildBinaries returns kvd (DIALKV_KVD, or built from the main module)
// and kvbench (built from this module).
func buildBinaries(t *testing.T) (kvd, kvbench string) {
	t.Helper()
	dir := t.TempDir()
	build := func(moduleDir, out, pkg string) string {
		path := filepath.Join(dir, out)
		cmd := exec.Command("go", "build", "-o", path, pkg)
		cmd.Dir = moduleDir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
		return path
	}
	kvd = os.Getenv("DIALKV_KVD")
	if kvd == "" {
		kvd = build("..", "kvd", "./cmd/kvd")
	}
	return kvd, build(".", "kvbench", "./cmd/kvbench")
}

func startDialkv(t *testing.T, kvd string) *cluster.Cluster {
	t.Helper()
	var lastErr error
	for attempt := range startAttempts {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		c, err := cluster.StartDialkv(ctx, cluster.Options{
			Binary:    kvd,
			Dir:       filepath.Join(t.TempDir(), "cluster"),
			ExtraArgs: []string{"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms"},
		})
		cancel()
		if err == nil {
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Errorf("stop cluster: %v", err)
				}
			})
			return c
		}
		t.Logf("start attempt %d: %v", attempt+1, err)
		lastErr = err
	}
	t.Fatalf("start dialkv: %v", lastErr)
	return nil
}

// kvbench runs the kvbench binary with -json and returns its result.
func kvbench(t *testing.T, bin string, c *cluster.Cluster, args ...string) *workload.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"-system", "dialkv", "-endpoints", strings.Join(c.Endpoints, ","), "-json", "-keys", "500", "-value-size", "64"}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kvbench %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var res workload.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("kvbench output: %v\n%s", err, stdout.String())
	}
	t.Logf("kvbench %s: %d ops, %.0f ops/s, p99 %.2f ms, %d errors", strings.Join(args, " "),
		res.Total.Ops, res.Total.OpsPerSec, res.Total.P99Ms, res.Total.Errors)
	return &res
}

// runFor is a workload's run length: half under -short, which keeps every
// check (work done, no errors) and only shortens the steady state the
// checks do not look at.
func runFor(d time.Duration) string {
	if testing.Short() {
		d /= 2
	}
	return d.String()
}

func TestSmoke_KvbenchAgainstThreeNodeKvd(t *testing.T) {
	kvd, bin := buildBinaries(t)
	c := startDialkv(t, kvd)

	costs := []string{cluster.DialkvFsyncs, cluster.DialkvLogRecords, cluster.DialkvMessages, cluster.DialkvSocketWrites, cluster.DialkvPeerBytes}
	sample := func() cluster.Usage {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		u, err := c.Sample(ctx, costs...)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	before := sample()
	load := kvbench(t, bin, c, "-workload", "load", "-clients", "8", "-duration", "1m")
	if !load.Complete || load.Total.Ops != 500 || load.Total.Errors != 0 {
		t.Fatalf("load: complete=%v ops=%d errors=%d %v; want all 500 keys, no errors",
			load.Complete, load.Total.Ops, load.Total.Errors, load.ErrorSamples)
	}
	// bench-compare's cost lines read these counters: 500 replicated
	// puts must show in every one of them, and in the nodes' CPU (each
	// node's alone may stay under one clock tick).
	used, err := sample().Sub(before)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range costs {
		if used.Counters[f] <= 0 {
			t.Errorf("%s rose by %v over 500 puts, want more", f, used.Counters[f])
		}
	}
	if len(used.MemberCPU) != 3 || used.TotalCPU() <= 0 {
		t.Errorf("CPU over 500 puts %v (per node %v), want some, from 3 nodes", used.TotalCPU(), used.MemberCPU)
	}
	for _, args := range [][]string{
		{"-workload", "put", "-clients", "8", "-duration", runFor(2 * time.Second)},
		{"-workload", "get", "-consistency", "linearizable", "-clients", "8", "-duration", runFor(2 * time.Second)},
		{"-workload", "get", "-consistency", "stale", "-clients", "8", "-conns", "2", "-duration", runFor(time.Second)},
		{"-workload", "mixed", "-read-ratio", "0.95", "-zipf", "0.99", "-clients", "8", "-duration", runFor(time.Second)},
	} {
		res := kvbench(t, bin, c, args...)
		if res.Total.Ops == 0 || res.Total.Errors != 0 || res.Total.Misses != 0 {
			t.Errorf("kvbench %s: ops=%d errors=%d misses=%d %v; want ops > 0 and no errors or misses",
				strings.Join(args, " "), res.Total.Ops, res.Total.Errors, res.Total.Misses, res.ErrorSamples)
		}
	}
	checkTxn(t, kvbench(t, bin, c, "-workload", "txn", "-clients", "8", "-duration", runFor(time.Second)), 8)
	for _, p := range c.Procs {
		if done, err := p.Exited(); done {
			t.Errorf("%s exited during the run (%v):\n%s", p.Name, err, p.LogTail(20))
		}
	}
}

// checkTxn asserts that a txn run did work without errors and that only
// each client's first compare failed (each client owns its keys).
func checkTxn(t *testing.T, res *workload.Result, clients int64) {
	t.Helper()
	if res.Total.Ops == 0 || res.Total.Errors != 0 || res.Total.CompareFailed > clients {
		t.Errorf("txn of %d keys: ops=%d errors=%d compare failed=%d %v; want ops > 0, no errors, at most %d failed compares",
			res.TxnKeys, res.Total.Ops, res.Total.Errors, res.Total.CompareFailed, res.ErrorSamples, clients)
	}
}

// TestSmoke_SixteenRangesWithBalancedLeaders is the set-up of bench-compare's
// -r16 workloads on a real cluster: split the workload key space into 16
// ranges, balance their leaders over the 3 nodes, and write through all
// of them.
func TestSmoke_SixteenRangesWithBalancedLeaders(t *testing.T) {
	kvd, bin := buildBinaries(t)
	c := startDialkv(t, kvd)
	cli, err := client.New(client.Config{Endpoints: c.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	keys, err := layout.SplitKeys(workload.DefaultKeyPrefix, 500, 16)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := layout.Split(ctx, cli, keys, nil); err != nil || n != 15 {
		t.Fatalf("split: %d splits, %v; want 15", n, err)
	}
	// Splitting again changes nothing: every key already starts a range.
	if n, err := layout.Split(ctx, cli, keys, nil); err != nil || n != 0 {
		t.Fatalf("second split: %d splits, %v; want none", n, err)
	}
	bal, err := layout.BalanceLeaders(ctx, cli, tlog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("balanced in %v, %d rounds, %d transfers: %s", bal.Elapsed, bal.Rounds, bal.Moves, bal.Layout)
	l, err := layout.Read(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Ranges) != 16 || len(l.Nodes) != 3 {
		t.Fatalf("layout %s: want 16 ranges on 3 nodes", l)
	}
	for i, r := range l.Ranges {
		if i > 0 && !bytes.Equal(r.Start, keys[i-1]) {
			t.Errorf("range %d (id %d) starts at %q, want %q", i, r.ID, r.Start, keys[i-1])
		}
	}
	// The placement driver may move a leadership on its own meanwhile,
	// but only from a node leading two more than another.
	for _, n := range l.Nodes {
		if n.Replicas != 16 || n.Leaders < 5 || n.Leaders > 6 {
			t.Errorf("%s holds %d replicas and leads %d ranges; want 16 and 5 or 6 (%s)", n.ID, n.Replicas, n.Leaders, l)
		}
	}

	res := kvbench(t, bin, c, "-workload", "put", "-clients", "16", "-duration", runFor(time.Second))
	if res.Total.Ops == 0 || res.Total.Errors != 0 {
		t.Errorf("puts over 16 ranges: ops=%d errors=%d %v; want ops > 0 and no errors", res.Total.Ops, res.Total.Errors, res.ErrorSamples)
	}
	// bench-compare's txn-c64-x4: each transaction's keys in 4 ranges.
	checkTxn(t, kvbench(t, bin, c, "-workload", "txn", "-txn-keys", "4", "-clients", "16", "-duration", runFor(time.Second)), 16)
}

// tlog writes progress lines to the test log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSmoke_Watchbench runs watchbench (`make bench-watch`) briefly: its
// own checks (every watcher got every acknowledged put, in order) decide
// its exit code; this asserts that each measurement was made and no
// operation failed.
func TestSmoke_Watchbench(t *testing.T) {
	kvd, _ := buildBinaries(t)
	bin := filepath.Join(t.TempDir(), "watchbench")
	if b, err := exec.Command("go", "build", "-o", bin, "./cmd/watchbench").CombinedOutput(); err != nil {
		t.Fatalf("go build watchbench: %v\n%s", err, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// 1s is watchbench's shortest -duration, so -short runs it in full.
	cmd := exec.CommandContext(ctx, bin, "-kvd", kvd, "-work-dir", t.TempDir(), "-duration", "1s", "-warmup", "0s",
		"-watchers", "2", "-clients", "4", "-keys", "100", "-value-size", "64")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("watchbench: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("watchbench:\n%s", stdout.String())
	lines := map[string][]string{}
	for l := range strings.Lines(stdout.String()) {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "WORKLOAD" {
			lines[f[1]] = f
		}
	}
	// field returns the value after name on a WORKLOAD line.
	field := func(workload, name string) string {
		f := lines[workload]
		for i := 2; i+1 < len(f); i++ {
			if f[i] == name {
				return f[i+1]
			}
		}
		t.Errorf("no %s on the %s line (%q)", name, workload, f)
		return ""
	}
	for _, w := range []string{"put-c4-before", "put-c4-w2", "put-c4-after", "lease-grant-c4", "lease-keepalive-c4"} {
		if ops := field(w, "ops/s"); ops == "0" || field(w, "errors") != "0" {
			t.Errorf("%s: ops/s %s, errors %s; want work done without errors", w, ops, field(w, "errors"))
		}
	}
	if ev, missed := field("watch-w2", "events/s"), field("watch-w2", "missed"); ev == "0" || missed != "0" {
		t.Errorf("watch-w2: events/s %s, missed %s; want events, none missed", ev, missed)
	}
	if !strings.Contains(stdout.String(), "SCALE put-c4-w2/put-c4 ") {
		t.Errorf("no SCALE line for the watchers")
	}
}
