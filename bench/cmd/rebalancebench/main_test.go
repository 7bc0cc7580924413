package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1GiB", want: 1 << 30},
		{in: "64MiB", want: 64 << 20},
		{in: "64 mib", want: 64 << 20},
		{in: "512K", want: 512 << 10},
		{in: "4096", want: 4096},
		{in: "10B", want: 10},
		{in: "", bad: true},
		{in: "0", bad: true},
		{in: "-1GiB", bad: true},
		{in: "1.5GiB", bad: true},
		{in: "1TiB", bad: true},
		{in: "9999999999GiB", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("parseSize(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseFlags_RefusesBadSettings(t *testing.T) {
	kvd := filepath.Join(t.TempDir(), "kvd")
	if err := os.WriteFile(kvd, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-kvd", kvd}, io.Discard)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o.size != 1<<30 || o.rangeMaxBytes != 64<<20 {
		t.Fatalf("defaults: size %d, range max %d; want 1 GiB and 64 MiB", o.size, o.rangeMaxBytes)
	}
	for _, args := range [][]string{
		{"-size", "1KiB", "-value-size", "4096"},
		{"-range-max-bytes", "512KiB"},
		{"-probe-rate", "0"},
		{"-port-base", "32700"},
		{"-port-base", "40000"},
		{"-quiet", "0s"},
		{"-baseline", "10ms"},
		{"-slow", "-1ms"},
		{"extra"},
	} {
		if _, err := parseFlags(append([]string{"-kvd", kvd}, args...), io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestSince_KeepsTheStartOfAnUnbrokenStretch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var at time.Time
	at = since(at, true, t0)
	at = since(at, true, t0.Add(time.Second))
	if !at.Equal(t0) {
		t.Fatalf("held from %v, want %v", at, t0)
	}
	at = since(at, false, t0.Add(2*time.Second))
	if !at.IsZero() {
		t.Fatalf("after a break: %v, want zero", at)
	}
	at = since(at, true, t0.Add(3*time.Second))
	if !at.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("held again from %v, want %v", at, t0.Add(3*time.Second))
	}
}

func TestProbeWindow_CutsSamplesByStartTime(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &probe{}
	for i, ms := range []int{1, 2, 3, 40, 50, 60} {
		p.samples = append(p.samples, sample{at: t0.Add(time.Duration(i-3) * time.Second), took: time.Duration(ms) * time.Millisecond})
	}
	p.samples = append(p.samples, sample{at: t0.Add(time.Second), failed: true})
	before := p.window(t0, t0.Add(-3*time.Second), t0)
	during := p.window(t0, t0, t0.Add(10*time.Second))
	if before.Ops != 3 || before.Errors != 0 || before.MaxMs < 2.9 || before.MaxMs > 3.1 {
		t.Fatalf("before: %+v, want the 3 puts up to 3 ms", before)
	}
	if during.Ops != 3 || during.Errors != 1 || during.MaxMs < 59 || during.MaxMs > 61 || during.From != 0 || during.To != 10 {
		t.Fatalf("during: %+v, want 3 puts up to 60 ms, 1 error, window 0 to 10 s", during)
	}
}

func TestProbe_StartsPutsAtItsRateWhileOthersAreOut(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2*maxProbeInFlight)
	put := func(ctx context.Context, _, _ []byte) error {
		started <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p := newProbe(put, 100, 8, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	// Every put is held: a probe that waited for each one would start
	// one and no more.
	deadline := time.After(10 * time.Second)
	for i := 0; i < maxProbeInFlight; i++ {
		select {
		case <-started:
		case <-deadline:
			t.Fatalf("%d puts started while the first was out, want %d", i, maxProbeInFlight)
		}
	}
	close(release)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

func TestProbeSlow_ListsTheSlowAndFailedPutsOfTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := &probe{}
	for i, ms := range []int{50, 1, 9, 10, 2} { // the first is before the window
		p.samples = append(p.samples, sample{at: t0.Add(time.Duration(i-1) * time.Second), took: time.Duration(ms) * time.Millisecond, key: fmt.Sprint("k", i)})
	}
	p.samples = append(p.samples, sample{at: t0.Add(4 * time.Second), failed: true, key: "kf"})
	got := p.slow(t0, t0, t0.Add(10*time.Second), 9*time.Millisecond)
	var keys []string
	for _, s := range got {
		keys = append(keys, s.Key)
	}
	if want := []string{"k2", "k3", "kf"}; !slices.Equal(keys, want) {
		t.Fatalf("slow puts %v, want %v (at least 9 ms, or failed, inside the window)", keys, want)
	}
	if got[0].AtSec != 1 || got[0].Ms != 9 || got[2].Failed != true {
		t.Fatalf("slow puts %+v: want k2 at 1 s taking 9 ms, kf failed", got)
	}
}

// TestRun_ATinyClusterTakesInAFourthNode runs the whole benchmark on 4 MiB
// in 1 MiB ranges: real kvd processes, a join, the watch, the report. It
// runs under -short too: it already is the smallest run that splits,
// about 20 s, most of it the fixed wait for the split ranges to settle, and
// make bench-smoke runs it as the tiny bench-rebalance.
func TestRun_ATinyClusterTakesInAFourthNode(t *testing.T) {
	kvd := buildKvd(t)
	work := t.TempDir()
	jsonPath := filepath.Join(work, "report.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// run ends at the deadline and stops its nodes before it returns, so
	// a run that overstays fails here with no kvd left behind.
	code := run(ctx, append(tinyArgs(kvd, filepath.Join(work, "run")), "-json", jsonPath), &stdout, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("rebalancebench did not finish in 4 minutes (exit %d, its nodes stopped); stderr:\n%s", code, stderr.String())
	}
	t.Logf("stdout:\n%s", stdout.String())
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
	}
	line := lastLine(stdout.String())
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "REBALANCE" || len(f)%2 != 1 {
		t.Fatalf("last line %q is not a REBALANCE line", line)
	}
	vals := map[string]float64{}
	for i := 1; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i+1], 64)
		if err != nil {
			t.Fatalf("%s %q: %v", f[i], f[i+1], err)
		}
		vals[f[i]] = v
	}
	if vals["ranges"] < 2 || vals["new_replicas"] < 1 || vals["share_s"] < 0 || vals["end_s"] < vals["share_s"] {
		t.Fatalf("REBALANCE %v: want at least 2 ranges, replicas on the new node, a share time and an end after it", vals)
	}
	if _, err := os.Stat(jsonPath); err != nil {
		t.Fatalf("no JSON report: %v", err)
	}
	// The data is removed after a successful run; only the report stays.
	if _, err := os.Stat(filepath.Join(work, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("work directory left behind: %v", err)
	}
}

// TestRun_CancelStopsItsNodes: a run whose context ends, as a test's
// deadline ends it, stops every kvd it started, by PID, before it returns.
func TestRun_CancelStopsItsNodes(t *testing.T) {
	kvd := buildKvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stderr := &pidWatch{pids: make(chan []int, 1)}
	done := make(chan int, 1)
	args := tinyArgs(kvd, t.TempDir())
	go func() { done <- run(ctx, args, io.Discard, stderr) }()
	var pids []int
	select {
	case pids = <-stderr.pids:
	case code := <-done:
		t.Fatalf("run ended (exit %d) before it started its nodes; stderr:\n%s", code, stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(stderr.String(), "interrupted") {
			t.Fatalf("exit %d after cancel; want 1, interrupted; stderr:\n%s", code, stderr)
		}
	case <-time.After(time.Minute):
		t.Fatalf("run did not return within a minute of its context's end; stderr:\n%s", stderr)
	}
	if len(pids) != 3 {
		t.Fatalf("started pids %v; want 3", pids)
	}
	for _, pid := range pids {
		// Stop reaps what it stops, so a stopped node's PID is gone.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kvd pid %d after run returned: kill 0 = %v; want ESRCH", pid, err)
		}
	}
}

// buildKvd returns DIALKV_KVD, or kvd built from the main module.
func buildKvd(t *testing.T) string {
	t.Helper()
	if kvd := os.Getenv("DIALKV_KVD"); kvd != "" {
		return kvd
	}
	kvd := filepath.Join(t.TempDir(), "kvd")
	cmd := exec.Command("go", "build", "-o", kvd, "./cmd/kvd")
	cmd.Dir = filepath.Join("..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build kvd: %v\n%s", err, out)
	}
	return kvd
}

// tinyArgs are the flags of the smallest run that splits: 4 MiB in 1 MiB
// ranges.
func tinyArgs(kvd, workDir string) []string {
	return []string{"-kvd", kvd, "-work-dir", workDir,
		"-size", "4MiB", "-range-max-bytes", "1MiB", "-baseline", "1s", "-hold", "0s", "-quiet", "10s",
		"-timeout", "2m", "-kvd-args", "--raft-heartbeat-timeout 500ms --raft-election-timeout 500ms"}
}

// pidWatch is run's stderr in a test: it keeps what run writes and hands
// over, once, the PIDs of its "started 3 kvd nodes: pids [...]" line.
type pidWatch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	sent bool
	pids chan []int // buffered: one send
}

func (w *pidWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.sent {
		if pids, ok := startedPIDs(w.buf.String()); ok {
			w.sent = true
			w.pids <- pids
		}
	}
	return len(p), nil
}

func (w *pidWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startedPIDs parses the PIDs of run's "started 3 kvd nodes" line, once
// that line has been written in full.
func startedPIDs(log string) ([]int, bool) {
	const prefix = "started 3 kvd nodes: pids ["
	i := strings.Index(log, prefix)
	if i < 0 {
		return nil, false
	}
	list, _, ok := strings.Cut(log[i+len(prefix):], "]")
	if !ok {
		return nil, false
	}
	var pids []int
	for _, f := range strings.Fields(list) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, false
		}
		pids = append(pids, pid)
	}
	return pids, true
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
