package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

func TestSplitKeys(t *testing.T) {
	keys := splitKeys(4)
	want := []string{"k0000250000", "k0000500000", "k0000750000"}
	if len(keys) != len(want) {
		t.Fatalf("splitKeys(4) = %q", keys)
	}
	for i, k := range keys {
		if string(k) != want[i] {
			t.Fatalf("splitKeys(4)[%d] = %q, want %q", i, k, want[i])
		}
	}
	if len(splitKeys(1)) != 0 {
		t.Fatal("one range needs no split")
	}
}

// planSplits must split every key once, split the coarse keys of one range
// in descending order, and within each group split a range that holds the
// group's keys, also descending.
func TestPlanSplits(t *testing.T) {
	for _, tc := range []struct{ n, workers int }{{1, 16}, {2, 16}, {10, 16}, {17, 16}, {100, 16}, {1000, 16}, {1000, 1}, {1000, 7}} {
		keys := splitKeys(tc.n)
		p := planSplits(keys, tc.workers)
		var all [][]byte
		all = append(all, p.Coarse...)
		if !slices.IsSortedFunc(p.Coarse, func(a, b []byte) int { return bytes.Compare(b, a) }) {
			t.Fatalf("n=%d: coarse keys not descending", tc.n)
		}
		starts := append([][]byte{nil}, p.Coarse...)
		slices.SortFunc(starts, bytes.Compare)
		for _, g := range p.Groups {
			if !slices.IsSortedFunc(g, func(a, b []byte) int { return bytes.Compare(b, a) }) {
				t.Fatalf("n=%d: group not descending", tc.n)
			}
			// Every key of a group lies in the same range after the coarse splits.
			rangeOf := func(k []byte) int {
				i, _ := slices.BinarySearchFunc(starts, k, bytes.Compare)
				if i < len(starts) && bytes.Equal(starts[i], k) {
					return i
				}
				return i - 1
			}
			r := rangeOf(g[0])
			for _, k := range g {
				if rangeOf(k) != r || bytes.Equal(starts[r], k) {
					t.Fatalf("n=%d: group spans ranges at %q", tc.n, k)
				}
			}
			all = append(all, g...)
		}
		if len(p.Groups) > tc.workers {
			t.Fatalf("n=%d: %d groups for %d workers", tc.n, len(p.Groups), tc.workers)
		}
		slices.SortFunc(all, bytes.Compare)
		if !slices.EqualFunc(all, keys, bytes.Equal) {
			t.Fatalf("n=%d: the plan does not split every key exactly once", tc.n)
		}
	}
}

func TestCheckRanges(t *testing.T) {
	var rs []*kvpb.RangeDescriptor
	for i, k := range append([][]byte{nil}, splitKeys(3)...) {
		rs = append(rs, &kvpb.RangeDescriptor{Id: uint64(i + 2), Start: k})
	}
	if err := checkRanges(rs, 3); err != nil {
		t.Fatal(err)
	}
	if err := checkRanges(rs[:2], 3); err == nil {
		t.Fatal("a missing range passed")
	}
	rs[2].Start = []byte("k9")
	if err := checkRanges(rs, 3); err == nil {
		t.Fatal("a wrong start passed")
	}
}

func TestParseGoroutines(t *testing.T) {
	in := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 1234\ngo_threads 9\n"
	if got := parseGoroutines(strings.NewReader(in)); got != 1234 {
		t.Fatalf("parseGoroutines = %d", got)
	}
}

func TestParseRanges(t *testing.T) {
	got, err := parseRanges(" 10, 100,1_000 ")
	if err != nil || !slices.Equal(got, []int{10, 100, 1000}) {
		t.Fatalf("parseRanges = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "x", "200000"} {
		if _, err := parseRanges(bad); err == nil {
			t.Fatalf("parseRanges(%q) passed", bad)
		}
	}
}

// The disk guard cancels the run, with a *diskError naming the largest
// file, once the data outgrows its limit.
func TestDiskGuard(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	used, top := dirUsage(dir, 1)
	if used < 1<<20 || len(top) != 1 {
		t.Fatalf("dirUsage = %d, %v", used, top)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	g := startDiskGuard(ctx, cancel, dir, 512<<10, 0)
	select {
	case <-ctx.Done():
	case <-time.After(10 * diskCheckEvery):
		t.Fatal("the guard did not fire")
	}
	if peak := g.Stop(); peak < 1<<20 {
		t.Fatalf("peak %d", peak)
	}
	var de *diskError
	if !errors.As(context.Cause(ctx), &de) || !strings.Contains(de.Error(), "big 1.0 MiB") {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
}
