package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/bench/workload"
)

func TestValueHeader(t *testing.T) {
	for _, tc := range []struct {
		phase, w, seq, size int
	}{
		{0, 0, 0, headerLen},
		{1, 63, 12345, 256},
		{99, maxWriters, 9_999_999_999, 300},
	} {
		val := make([]byte, tc.size)
		fillValue(val, tc.phase, tc.w, tc.seq)
		phase, w, seq, ok := parseValue(val)
		if !ok || phase != tc.phase || w != tc.w || seq != tc.seq {
			t.Errorf("fillValue(%d, %d, %d) = %q, parsed as %d %d %d %v", tc.phase, tc.w, tc.seq, val, phase, w, seq, ok)
		}
	}
	for _, v := range []string{"", "p01 w0001 s000000001", "x01 w0001 s0000000001 ", "p01 w00x1 s0000000001 ", "p01 w0001 s0000000001x", "p-1 w0001 s0000000001 "} {
		if _, _, _, ok := parseValue([]byte(v)); ok {
			t.Errorf("parseValue(%q) accepted a value fillValue cannot write", v)
		}
	}
}

func TestParseCounts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"1,100", []int{1, 100}},
		{" 0 , 5", []int{0, 5}},
		{"1000", []int{1000}},
		{"1001", nil},
		{"-1", nil},
		{"1,,2", nil},
		{"", nil},
	} {
		got, err := parseCounts(tc.in)
		if (err != nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("parseCounts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// The check behind every FAIL line: a missing event of an acknowledged put
// fails; an event of a put the client saw fail does not; a second event of
// one put is a repeat; lags are measured from the acknowledgement.
func TestMatch(t *testing.T) {
	writers := func(acks ...[]int64) []*writerLog {
		out := make([]*writerLog, len(acks))
		for i, a := range acks {
			out[i] = &writerLog{acks: a}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		writers  []*writerLog
		arrivals [][]int64
		events   int64
		want     matchResult
		lags     int64
	}{
		{"all delivered", writers([]int64{1000, 2000}, []int64{3000}), [][]int64{{5000, 7000}, {3000}}, 3, matchResult{events: 3}, 3},
		{"one missing", writers([]int64{1000, 2000}), [][]int64{{5000}}, 1, matchResult{events: 1, missing: 1}, 1},
		{"failed put delivered", writers([]int64{0, 2000}), [][]int64{{5000, 6000}}, 2, matchResult{events: 2}, 1},
		{"failed put not delivered", writers([]int64{0, 2000}), [][]int64{{0, 6000}}, 1, matchResult{events: 1}, 1},
		{"repeat", writers([]int64{1000}), [][]int64{{5000}}, 2, matchResult{events: 2, repeats: 1}, 1},
		{"put never made", writers([]int64{1000}), [][]int64{{5000, 0, 9000}}, 2, matchResult{events: 2, foreign: 1}, 1},
		{"nothing", writers([]int64{1000}, nil), [][]int64{nil, nil}, 0, matchResult{missing: 1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lag := workload.NewHistogram()
			got := match(tc.arrivals, tc.writers, tc.events, lag, matchResult{})
			if got != tc.want {
				t.Errorf("match = %+v, want %+v", got, tc.want)
			}
			if lag.TotalCount() != tc.lags {
				t.Errorf("%d lags recorded, want %d", lag.TotalCount(), tc.lags)
			}
		})
	}
	// An event that came before its put's acknowledgement counts 1 µs.
	lag := workload.NewHistogram()
	match([][]int64{{1_000_000}}, writers([]int64{5_000_000}), 1, lag, matchResult{})
	if lag.Max() != 1 {
		t.Errorf("lag of an event before its ack = %d µs, want 1", lag.Max())
	}
}

// A watcher sorts what it receives: events of this phase's puts, of
// earlier phases' (a follower's start), and of nothing the writers made,
// and notices an index that does not grow within a range.
func TestWatcherRecord(t *testing.T) {
	w := &watcher{phase: 2, lastIndex: map[uint64]*uint64{}, arrivals: make([][]int64, 2)}
	val := func(phase, wr, seq int) []byte {
		v := make([]byte, 64)
		fillValue(v, phase, wr, seq)
		return v
	}
	w.record(nil, 1) // progress
	w.record([]event{
		{put: true, group: 2, index: 11, value: val(1, 0, 7)},
		{put: true, group: 2, index: 12, value: val(2, 1, 3)},
		{put: true, group: 2, index: 12, value: val(2, 0, 0)},
		{put: true, group: 2, index: 13, value: []byte("someone else's")},
		{put: false, group: 2, index: 14},
		{put: true, group: 2, index: 15, value: val(2, 5, 0)},
	}, 42)
	if w.messages != 1 || w.earlier != 1 || w.events != 2 || w.foreign != 3 || w.outOfOrder != 1 || w.last != 42 {
		t.Fatalf("messages %d earlier %d events %d foreign %d out of order %d last %d; want 1 1 2 3 1 42",
			w.messages, w.earlier, w.events, w.foreign, w.outOfOrder, w.last)
	}
	if len(w.arrivals[1]) != 4 || w.arrivals[1][3] != 42 || w.arrivals[0][0] != 42 {
		t.Fatalf("arrivals %v", w.arrivals)
	}
	if !strings.Contains(w.firstOdd, "out of order") {
		t.Fatalf("first odd event: %q", w.firstOdd)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"-kvd", "/bin/sh"}, true},
		{[]string{"-kvd", "/bin/sh", "-watchers", "0,1,100", "-duration", "2s"}, true},
		{[]string{"-kvd", "/nonexistent/kvd"}, false},
		{[]string{"-kvd", "/bin/sh", "-value-size", "10"}, false},
		{[]string{"-kvd", "/bin/sh", "-clients", "0"}, false},
		{[]string{"-kvd", "/bin/sh", "-duration", "100ms"}, false},
		{[]string{"-kvd", "/bin/sh", "-port-base", "32700"}, false},
		{[]string{"-kvd", "/bin/sh", "extra"}, false},
		{[]string{"-kvd", "/bin/sh", "-systems", "etcd,dialkv", "-etcdnode", "/bin/sh"}, true},
		{[]string{"-kvd", "/bin/sh", "-systems", "etcd", "-etcdnode", "/nonexistent/etcdnode"}, false},
		{[]string{"-kvd", "/bin/sh", "-systems", "dialkv", "-etcdnode", "/nonexistent/etcdnode"}, true},
		{[]string{"-kvd", "/bin/sh", "-systems", "zookeeper"}, false},
		{[]string{"-kvd", "/bin/sh", "-systems", ""}, false},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("parseFlags(%q): %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

func TestParseSystems_DialkvRunsFirst(t *testing.T) {
	for in, want := range map[string][]string{
		"dialkv":             {"dialkv"},
		"etcd":               {"etcd"},
		"etcd,dialkv":        {"dialkv", "etcd"},
		" dialkv , etcd ":    {"dialkv", "etcd"},
		"etcd,dialkv,dialkv": {"dialkv", "etcd"},
	} {
		got, err := parseSystems(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseSystems(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// The RATIO lines put dialkv over etcd for every measurement both made.
func TestPrintRatios(t *testing.T) {
	stats := func(ops, p99 float64) workload.Stats { return workload.Stats{OpsPerSec: ops, P99Ms: p99} }
	d := sysResult{
		puts:  map[int]workload.Stats{0: stats(9000, 20), 100: stats(3000, 60)},
		watch: map[int]watchStats{100: {eventsPerSec: 300000, lagP99Ms: 50}},
		grant: stats(6000, 20), keep: stats(10000, 15),
	}
	e := sysResult{
		puts:  map[int]workload.Stats{0: stats(6000, 30), 100: stats(4000, 40)},
		watch: map[int]watchStats{100: {eventsPerSec: 400000, lagP99Ms: 10}},
		grant: stats(3000, 30), keep: stats(0, 0),
	}
	var out strings.Builder
	printRatios(&out, &options{clients: 64}, d, e)
	want := `RATIO put-c64 1.500 p99 20.000 vs 30.000
RATIO put-c64-w100 0.750 p99 60.000 vs 40.000
RATIO watch-w100 0.750 lag p99 50.000 vs 10.000 (events/s delivered)
RATIO lease-grant-c64 2.000 p99 20.000 vs 30.000
RATIO lease-keepalive-c64 NaN p99 15.000 vs 0.000
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}
