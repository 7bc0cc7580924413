package jepsen

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Hand-made watch and lease histories: an honest one, and each promise
// broken once. Times are in milliseconds.

// at builds an op with times in milliseconds.
func at(o Op, start, end int64) Op {
	o.Start, o.End = start*ms, end*ms
	if o.Type == "" {
		o.Type = OK
	}
	return o
}

func msg(proc int, t int64, cursor string, evs ...WatchEvent) Op {
	return at(Op{Process: proc, F: OpWatchMsg, Cursor: cursor, Events: evs}, t, t)
}

func put(key, v string, r, i uint64) WatchEvent {
	return WatchEvent{Type: EventPut, Key: key, Value: v, Range: r, Index: i}
}

// checkOps runs every checker on ops (indexed in order) and faults.
func checkOps(ops []Op, faults []Fault) map[string]*CheckResult {
	h := &History{Faults: faults}
	for i, o := range ops {
		o.Index = i
		h.Ops = append(h.Ops, o)
	}
	out := map[string]*CheckResult{}
	for _, r := range Check(h, CheckOptions{LinearizableTimeout: 10 * time.Second, LeaseExpiryBound: 3 * time.Second}) {
		out[r.Checker] = r
	}
	return out
}

const w1 = WatcherProcess

// watchBase is an honest watch history: writes under w/ in range 1, a
// resume, an unknown compare-and-swap delivered, a failed put not, a
// split's new range 2.
func watchBase() []Op {
	return []Op{
		at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, Cursor: "1:10"}, 0, 1),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/01", Value: "a", RangeID: 1, Revision: 11}, 2, 3),
		msg(w1, 3, "1:11", put("w/01", "a", 1, 11)),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/02", Value: "b", RangeID: 1, Revision: 12}, 4, 5),
		msg(w1, 5, "1:12", put("w/02", "b", 1, 12)),
		at(Op{Process: w1, F: OpWatchEnd, Type: Info, Cursor: "1:12", Error: "cut"}, 1, 5),
		at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, From: "1:12", Cursor: "1:12"}, 6, 6),
		at(Op{Process: 1, F: OpWatchDelete, Key: "w/01", RangeID: 1, Revision: 13}, 6, 7),
		msg(w1, 7, "1:13", WatchEvent{Type: EventDelete, Key: "w/01", Range: 1, Index: 13}),
		at(Op{Process: 1, F: OpWatchCAS, Key: "w/02", Expected: "b", Value: "c", Type: Info}, 8, 9),
		msg(w1, 9, "1:14", put("w/02", "c", 1, 14)),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/03", Value: "d", Type: Fail}, 10, 11),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/05", Value: "e", RangeID: 2, Revision: 3}, 12, 13),
		msg(w1, 13, "1:14,2:3", put("w/05", "e", 2, 3)),
		at(Op{Process: w1, F: OpWatchEnd, Type: Info, Cursor: "1:14,2:3", Error: "the watcher stopped"}, 6, 20),
	}
}

// edit returns base with op i replaced (or removed when o is nil) and
// extra ops appended.
func edit(base []Op, i int, o *Op, extra ...Op) []Op {
	out := slices.Clone(base)
	if i >= 0 {
		if o == nil {
			out = slices.Delete(out, i, i+1)
		} else {
			out[i] = *o
		}
	}
	return append(out, extra...)
}

func ptr(o Op) *Op { return &o }

func TestCheckWatch(t *testing.T) {
	base := watchBase()
	for _, tc := range []struct {
		name string
		ops  []Op
		want string // "" passes; else a violation containing it
	}{
		{"honest history", base, ""},
		{"duplicate event", edit(base, -1, nil, msg(w1, 14, "1:14,2:3", put("w/02", "b", 1, 12))), "delivered twice"},
		{"out of order", edit(edit(base, 2, ptr(msg(w1, 3, "1:10"))), 4, ptr(msg(w1, 5, "1:12", put("w/02", "b", 1, 12), put("w/01", "a", 1, 11)))), "out of order"},
		{"missed acknowledged write", edit(base, 4, nil), "never delivered"},
		{"missed write in the new range", edit(base, 13, nil), "never delivered"},
		{"invented event", edit(base, -1, nil, msg(w1, 15, "1:15,2:3", put("w/09", "zzz", 1, 15))), "invented put"},
		{"event at another index than acknowledged", edit(base, 2, ptr(msg(w1, 3, "1:11", put("w/01", "a", 1, 10)))), "acknowledged at 1:11"},
		{"failed write delivered", edit(base, -1, nil, msg(w1, 15, "1:15,2:3", put("w/03", "d", 1, 15))), "invented put"},
		{"invented delete", edit(base, -1, nil, msg(w1, 15, "1:15,2:3", WatchEvent{Type: EventDelete, Key: "w/07", Range: 1, Index: 15})), "invented delete"},
		{"event before the starting cursor", edit(base, 2, ptr(msg(w1, 3, "1:11", put("w/01", "a", 1, 11), put("w/00", "x", 1, 9))),
			at(Op{Process: 1, F: OpWatchPut, Key: "w/00", Value: "x", RangeID: 1, Revision: 9}, 0, 0)), "out of order"},
		{"cursor does not cover its event", edit(base, 2, ptr(msg(w1, 3, "1:10", put("w/01", "a", 1, 11)))), "does not cover"},
		{"resume behind the cursor", edit(base, 6, ptr(at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, From: "1:12", Cursor: "1:11"}, 6, 6))), "behind it"},
		{"lease delete of a plain key", edit(base, -1, nil, msg(w1, 15, "1:15,2:3", WatchEvent{Type: EventDelete, Key: "w/02", Range: 1, Index: 15, Cause: CauseLeaseExpired, Lease: 5})), "not the key's granted lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := checkOps(tc.ops, nil)[CheckWatch]
			if r == nil {
				t.Fatal("no watch checker result")
			}
			if tc.want == "" {
				if r.Failing() {
					t.Fatalf("verdict %s, violations %+v", r.Verdict, r.Violations)
				}
				if r.Checked != 4 {
					t.Errorf("checked %d acknowledged writes, want 4 (notes %v)", r.Checked, r.Notes)
				}
				return
			}
			if !r.Failing() {
				t.Fatalf("passed; notes %v", r.Notes)
			}
			found := false
			for _, v := range r.Violations {
				found = found || strings.Contains(v.Msg, tc.want)
			}
			if !found {
				t.Errorf("no violation mentions %q: %+v", tc.want, r.Violations)
			}
		})
	}
}

// TestCheckWatch_Compacted: after COMPACTED the watcher restarts from
// now; the writes in between are not owed, those after are.
func TestCheckWatch_Compacted(t *testing.T) {
	ops := []Op{
		at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, Cursor: "1:10"}, 0, 1),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/01", Value: "a", RangeID: 1, Revision: 11}, 2, 3),
		msg(w1, 3, "1:11", put("w/01", "a", 1, 11)),
		at(Op{Process: w1, F: OpWatchCompacted, Type: Fail, Cursor: "1:11", Error: "OutOfRange COMPACTED"}, 1, 4),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/02", Value: "b", RangeID: 1, Revision: 12}, 4, 5), // during the gap
		at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, Cursor: "1:12"}, 6, 7),
		at(Op{Process: 1, F: OpWatchPut, Key: "w/03", Value: "c", RangeID: 1, Revision: 13}, 8, 9),
		msg(w1, 9, "1:13", put("w/03", "c", 1, 13)),
	}
	r := checkOps(ops, nil)[CheckWatch]
	if r.Failing() || r.Checked != 2 {
		t.Fatalf("verdict %s, checked %d (want pass, 2): %+v", r.Verdict, r.Checked, r.Violations)
	}
	// The write after the restart is owed.
	r = checkOps(ops[:len(ops)-1], nil)[CheckWatch]
	if !r.Failing() {
		t.Fatal("a write after the restart went undelivered, yet the checker passed")
	}
	// A watch from now through a lagging follower may start behind what
	// the watcher had received, and deliver it again.
	lagging := slices.Clone(ops)
	lagging[5] = at(Op{Process: w1, F: OpWatch, Key: WatchPrefix, Cursor: "1:10"}, 6, 7)
	lagging[7] = msg(w1, 9, "1:13", put("w/01", "a", 1, 11), put("w/02", "b", 1, 12), put("w/03", "c", 1, 13))
	if r := checkOps(lagging, nil)[CheckWatch]; r.Failing() || r.Checked != 4 {
		t.Fatalf("a restart behind: verdict %s, checked %d (want pass, 4): %+v", r.Verdict, r.Checked, r.Violations)
	}
}

// TestWatchHistory_RoundTrip: history.jsonl keeps the events, cursors and
// leases, so that --recheck checks watches and leases again.
func TestWatchHistory_RoundTrip(t *testing.T) {
	ops := append(watchBase(), leaseBase()...)
	var b strings.Builder
	for i, o := range ops {
		o.Index = i
		b.WriteString(mustJSON(o) + "\n")
	}
	h, err := ReadHistory(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ops {
		got, want := h.Ops[i], ops[i]
		want.Index = i
		if got.Cursor != want.Cursor || got.From != want.From || got.Lease != want.Lease || got.TTL != want.TTL || !slices.Equal(got.Events, want.Events) {
			t.Fatalf("op %d: got %+v, want %+v", i, got, want)
		}
	}
}
