package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// TestRun_ATinyClusterTakesInAFourthNode runs the whole benchmark on 4 MiB
// in 1 MiB ranges: real kvd processes, a join, the watch, the report. It
// runs under -short too: it already is the smallest run that splits,
// about 20 s, most of it the fixed wait for the split ranges to settle, and
// make bench-smoke runs it as the tiny bench-rebalance.
func TestRun_ATinyClusterTakesInAFourthNode(t *testing.T) {
	kvd := os.Getenv("DIALKV_KVD")
	if kvd == "" {
		kvd = filepath.Join(t.TempDir(), "kvd")
		cmd := exec.Command("go", "build", "-o", kvd, "./cmd/kvd")
		cmd.Dir = filepath.Join("..", "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build kvd: %v\n%s", err, out)
		}
	}
	work := t.TempDir()
	jsonPath := filepath.Join(work, "report.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"-kvd", kvd, "-work-dir", filepath.Join(work, "run"),
			"-size", "4MiB", "-range-max-bytes", "1MiB", "-baseline", "1s", "-hold", "0s", "-quiet", "10s",
			"-timeout", "2m", "-json", jsonPath, "-kvd-args", "--raft-heartbeat-timeout 500ms --raft-election-timeout 500ms"}, &stdout, &stderr)
	}()
	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		t.Fatalf("rebalancebench did not finish in 4 minutes; stderr:\n%s", stderr.String())
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

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
