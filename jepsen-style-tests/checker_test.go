package jepsen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hand-made histories, good and bad: proof that each checker bites, and
// that it does not bite an honest history. Times are in milliseconds.

const ms = int64(time.Millisecond)

type hist struct{ ops []Op }

func (h *hist) op(o Op) *hist {
	o.Start *= ms
	o.End *= ms
	if o.Type == "" {
		o.Type = OK
	}
	if o.Process == 0 {
		o.Process = 1
	}
	o.Index = len(h.ops)
	h.ops = append(h.ops, o)
	return h
}

func (h *hist) put(p int, key, v string, start, end int64, typ string, rev uint64) *hist {
	return h.op(Op{Process: p, F: OpPut, Key: key, Value: v, Start: start, End: end, Type: typ, Revision: rev, Node: "n1", API: "grpc"})
}

func (h *hist) get(p int, key, v, level, node string, start, end int64, rev uint64) *hist {
	return h.op(Op{Process: p, F: OpGet, Key: key, Value: v, Missing: v == "", Level: level, ServedBy: node, Start: start, End: end, Revision: rev, AppliedIndex: rev})
}

func (h *hist) check(t *testing.T) map[string]*CheckResult {
	t.Helper()
	res := Check(&History{Ops: h.ops}, CheckOptions{LinearizableTimeout: 10 * time.Second})
	out := map[string]*CheckResult{}
	for _, r := range res {
		out[r.Checker] = r
	}
	return out
}

// expect asserts that exactly the named checkers fail.
func expect(t *testing.T, h *hist, failing ...string) map[string]*CheckResult {
	t.Helper()
	res := h.check(t)
	want := map[string]bool{}
	for _, f := range failing {
		want[f] = true
	}
	for _, name := range Checkers {
		r := res[name]
		if got := r.Verdict == Failed; got != want[name] {
			t.Errorf("checker %s: verdict %s, want failing=%v; violations %+v notes %v", name, r.Verdict, want[name], r.Violations, r.Notes)
		}
	}
	return res
}

const k = RegisterPrefix + "x"

func TestCheck_HonestHistoryPasses(t *testing.T) {
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		get(2, k, "a", Linearizable, "n1", 5, 20, 5). // concurrent with the put, sees it
		put(1, k, "b", 30, 40, OK, 7).
		get(2, k, "a", Stale, "n2", 35, 36, 5). // a lagging replica
		get(2, k, "b", Linearizable, "n1", 50, 60, 7).
		put(3, k, "c", 70, 80, Info, 0). // unknown: maybe never applied
		get(2, k, "b", Linearizable, "n1", 90, 100, 7).
		put(3, k, "d", 110, 120, Fail, 0).
		op(Op{Process: FinalProcess, F: OpGet, Key: k, Value: "b", Level: Linearizable, Start: 200, End: 210, Revision: 7, ServedBy: "n1"})
	expect(t, h)
}

func TestCheck_StaleLinearizableRead(t *testing.T) {
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		put(1, k, "b", 20, 30, OK, 7).
		get(2, k, "a", Linearizable, "n3", 40, 50, 5) // b was acknowledged before this read began
	res := expect(t, h, CheckLinearizable)
	if v := res[CheckLinearizable].Violations; len(v) != 1 || v[0].Key != k {
		t.Errorf("violations %+v, want one on %s", v, k)
	}
}

func TestCheck_UnknownWritePossiblyApplied(t *testing.T) {
	// An info write may show up, at any time after its invocation...
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		put(1, k, "b", 20, 30, Info, 0).
		get(2, k, "b", Linearizable, "n1", 500, 510, 9)
	expect(t, h)
	// ...but once seen it cannot be unseen.
	h.get(2, k, "a", Linearizable, "n2", 600, 610, 5)
	expect(t, h, CheckLinearizable)
}

func TestCheck_CompareAndSwap(t *testing.T) {
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		op(Op{Process: 1, F: OpCAS, Key: k, Expected: "a", Value: "b", Start: 20, End: 30, Revision: 6}).
		get(2, k, "a", Linearizable, "n1", 40, 50, 5) // the swap was acknowledged
	expect(t, h, CheckLinearizable)

	// A swap that failed its comparison although the key held the
	// expected value throughout.
	h = &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		op(Op{Process: 1, F: OpCAS, Key: k, Expected: "a", Value: "b", Start: 20, End: 30, Type: Fail, Error: "COMPARE_FAILED"}).
		get(2, k, "a", Linearizable, "n1", 40, 50, 5)
	expect(t, h, CheckLinearizable)
}

func TestCheck_BoundedRead(t *testing.T) {
	base := func() *hist {
		h := &hist{}
		return h.put(1, k, "a", 0, 10, OK, 5).put(1, k, "b", 20, 30, OK, 7)
	}
	bounded := func(h *hist, v string, start int64, rev uint64) *hist {
		return h.op(Op{Process: 2, F: OpGet, Key: k, Value: v, Missing: v == "", Level: Bounded, MaxStaleness: 100, ServedBy: "n2",
			Start: start, End: start + 5, Revision: rev, AppliedIndex: rev})
	}
	// Started 100ms after b was acknowledged minus... within the bound: a is fine.
	expect(t, bounded(base(), "a", 110, 5))
	// Started 500ms later with a 100ms bound: must see b.
	res := expect(t, bounded(base(), "a", 500, 5), CheckBounded)
	if msg := res[CheckBounded].Violations[0].Msg; !strings.Contains(msg, "revision 5") {
		t.Errorf("violation %q should name the revisions", msg)
	}
	// Found nothing at all, late.
	expect(t, bounded(base(), "", 500, 0), CheckBounded)
	// Served with a staleness over the bound it was asked for.
	h := base()
	stale := int64(150)
	h.op(Op{Process: 2, F: OpGet, Key: k, Value: "b", Level: Bounded, MaxStaleness: 100, StalenessMs: &stale, ServedBy: "n2", Start: 500, End: 505, Revision: 7})
	expect(t, h, CheckBounded)
}

func TestCheck_Session(t *testing.T) {
	// Read-your-writes.
	h := &hist{}
	h.put(2, k, "a", 0, 10, OK, 5).
		put(1, k, "b", 20, 30, OK, 7).
		get(1, k, "a", Session, "n3", 40, 50, 5)
	expect(t, h, CheckSession)
	// Another client's write is not part of the session: fine.
	h = &hist{}
	h.put(2, k, "a", 0, 10, OK, 5).
		put(2, k, "b", 20, 30, OK, 7).
		get(1, k, "a", Session, "n3", 40, 50, 5)
	expect(t, h)
	// Monotonic reads across replicas.
	h = &hist{}
	h.put(2, k, "a", 0, 10, OK, 5).
		put(2, k, "b", 20, 30, OK, 7).
		get(1, k, "b", Session, "n1", 40, 50, 7).
		get(1, k, "a", Session, "n3", 60, 70, 5)
	expect(t, h, CheckSession)
}

func TestCheck_StaleReads(t *testing.T) {
	// An invented value.
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).get(2, k, "zzz", Stale, "n2", 20, 30, 5)
	expect(t, h, CheckStale)
	// A value read before its write was even invoked.
	h = &hist{}
	h.get(2, k, "a", Stale, "n2", 0, 5, 5).put(1, k, "a", 10, 20, OK, 5)
	expect(t, h, CheckStale)
	// One replica going backwards.
	h = &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).put(1, k, "b", 20, 30, OK, 7).
		get(2, k, "b", Stale, "n2", 40, 50, 7).
		get(3, k, "a", Stale, "n2", 60, 70, 5)
	expect(t, h, CheckStale)
	// The same, but n2 was restarted in between: a new incarnation.
	h.op(Op{Process: NemesisProcess, F: OpRestart, Node: "n2", Start: 55, End: 55})
	expect(t, h)
	// A replica that has no state at all (applied index 0, key absent)
	// fails the check, unless that known issue is tolerated.
	h = &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		get(2, k, "a", Stale, "n2", 40, 50, 5).
		get(3, k, "", Stale, "n2", 60, 70, 0)
	expect(t, h, CheckStale)
	res := Check(&History{Ops: h.ops}, CheckOptions{KnownIssues: []string{KnownUninitializedReplica}})
	if st := res[3]; st.Checker != CheckStale || st.Verdict != Pass || st.Known[KnownUninitializedReplica] != 1 {
		t.Errorf("tolerated uninitialized read: %+v", st)
	}
	// Different replicas may disagree.
	h = &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).put(1, k, "b", 20, 30, OK, 7).
		get(2, k, "b", Stale, "n2", 40, 50, 7).
		get(3, k, "a", Stale, "n3", 60, 70, 5)
	expect(t, h)
}

func TestCheck_Lists(t *testing.T) {
	l := ListPrefix + "0"
	app := func(h *hist, p int, exp, e string, start, end int64, typ string) *hist {
		return h.op(Op{Process: p, F: OpAppend, Key: l, Expected: exp, Value: e, Start: start, End: end, Type: typ})
	}
	base := func() *hist {
		h := &hist{}
		app(h, 1, "", "e1", 0, 10, OK)
		app(h, 1, "e1", "e2", 20, 30, OK)
		return h
	}
	expect(t, base().get(2, l, "e1", Stale, "n2", 25, 35, 0))
	// A list no sequence of appends produced.
	expect(t, base().get(2, l, "e2", Stale, "n2", 40, 50, 0), CheckStale)
	// A linearizable read missing an acknowledged element.
	expect(t, base().get(2, l, "e1", Linearizable, "n1", 40, 50, 0), CheckLinearizable)
	// An element lost after the heal.
	h := base()
	h.op(Op{Process: FinalProcess, F: OpGet, Key: l, Value: "e1", Level: Linearizable, Start: 100, End: 110})
	expect(t, h, CheckLinearizable, CheckDurability)
	// The element of an append that failed its comparison shows up.
	h = base()
	app(h, 2, "e0", "e9", 40, 50, Fail).ops[2].Error = "COMPARE_FAILED"
	h.get(3, l, "e1 e2 e9", Stale, "n2", 60, 70, 0)
	expect(t, h, CheckStale, CheckHonesty)
}

func TestCheck_DurabilityAndHonesty(t *testing.T) {
	// A register that lost its acknowledged write.
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5).
		op(Op{Process: FinalProcess, F: OpGet, Key: k, Missing: true, Level: Linearizable, Start: 100, End: 110})
	expect(t, h, CheckLinearizable, CheckDurability)
	// A set that lost an acknowledged element.
	h = &hist{}
	h.op(Op{Process: 1, F: OpAdd, Key: SetPrefix + "1/1", Value: SetPrefix + "1/1", Start: 0, End: 10}).
		op(Op{Process: 1, F: OpAdd, Key: SetPrefix + "1/2", Value: SetPrefix + "1/2", Start: 20, End: 30}).
		op(Op{Process: FinalProcess, F: OpScan, Key: SetPrefix, Elements: []string{SetPrefix + "1/2"}, Level: Linearizable, Start: 100, End: 110})
	expect(t, h, CheckDurability)
	// A failed put that became visible.
	h = &hist{}
	h.put(1, k, "a", 0, 10, Fail, 0).get(2, k, "a", Stale, "n2", 20, 30, 5)
	res := expect(t, h, CheckHonesty)
	if msg := res[CheckHonesty].Violations[0].Msg; !strings.Contains(msg, "failed") {
		t.Errorf("honesty violation %q", msg)
	}
}

// The canary's shape: stale reads recorded as linearizable on a node cut
// off from the writers must be caught.
func TestCheck_MislabelledStaleReads(t *testing.T) {
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5)
	for i := range 20 {
		v := string(rune('b' + i))
		h.put(1, k, v, 20+int64(i)*20, 30+int64(i)*20, OK, uint64(6+i))
		h.op(Op{Process: 2, F: OpGet, Key: k, Value: "a", Level: Linearizable, ServedBy: "n3", Start: 35 + int64(i)*20, End: 36 + int64(i)*20, Revision: 5, Planted: true})
	}
	expect(t, h, CheckLinearizable)
}

func TestHistory_RoundTrip(t *testing.T) {
	rec, err := NewRecorder(t.TempDir() + "/history.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	id := rec.FaultStart("partition", "isolate n2")
	rec.Add(Op{Process: 1, F: OpPut, Key: k, Value: "a", Start: rec.Now(), End: rec.Now(), Type: OK})
	rec.FaultEnd(id)
	rec.Restarted("n2", "kill")
	h1 := rec.History()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, o := range h1.Ops {
		buf.WriteString(mustJSON(o) + "\n")
	}
	h2, err := ReadHistory(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(h2.Ops) != 4 || len(h2.Faults) != 1 || h2.Faults[0].Desc != "isolate n2" || h2.Faults[0].End == 0 {
		t.Errorf("round trip: %d ops, faults %+v", len(h2.Ops), h2.Faults)
	}
	if len(h2.ClientOps()) != 1 {
		t.Errorf("ClientOps: %v", h2.ClientOps())
	}
}

// After a range split a key lives in a new range whose log starts again
// from zero: its old value keeps the parent's revision, new writes get
// small ones. Revisions from different ranges are not compared.
func TestCheck_RevisionsAcrossASplit(t *testing.T) {
	h := &hist{}
	h.op(Op{Process: 1, F: OpPut, Key: k, Value: "a", Start: 0, End: 10, Revision: 5000, RangeID: 2})
	h.op(Op{Process: 1, F: OpGet, Key: k, Value: "a", Level: Session, ServedBy: "n2", Start: 20, End: 30, Revision: 5000, RangeID: 7, AppliedIndex: 3})
	h.op(Op{Process: 1, F: OpPut, Key: k, Value: "b", Start: 40, End: 50, Revision: 12, RangeID: 7})
	h.op(Op{Process: 1, F: OpGet, Key: k, Value: "b", Level: Session, ServedBy: "n2", Start: 60, End: 70, Revision: 12, RangeID: 7, AppliedIndex: 12})
	h.op(Op{Process: 2, F: OpGet, Key: k, Value: "b", Level: Bounded, MaxStaleness: 10, ServedBy: "n3", Start: 200, End: 210, Revision: 12, RangeID: 7, AppliedIndex: 12})
	expect(t, h)
	// ...but values still order writes: going back to a is caught.
	h.op(Op{Process: 1, F: OpGet, Key: k, Value: "a", Level: Session, ServedBy: "n2", Start: 300, End: 310, Revision: 5000, RangeID: 7, AppliedIndex: 20})
	expect(t, h, CheckSession, CheckStale)
}

// A real history from TestSuite_Short (testdata/uninitialized-replica-read.*):
// n3's replica of range 2 was dropped and re-created by the placement
// driver while n3 was paused, and served a stale read from empty state.
// The stale checker must flag it, and tolerate exactly it when told to.
func TestCheck_RealHistoryUninitializedReplica(t *testing.T) {
	f, err := os.Open("testdata/uninitialized-replica-read.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := ReadHistory(f)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(h, CheckOptions{})
	for _, r := range res {
		switch {
		case r.Checker == CheckStale && (r.Verdict != Failed || r.ViolationCount != 1 || !strings.Contains(r.Violations[0].Msg, "found the key absent")):
			t.Errorf("stale checker on the real history: %s %+v", r.Verdict, r.Violations)
		case r.Checker != CheckStale && r.Verdict == Failed:
			t.Errorf("checker %s failed on the real history: %+v", r.Checker, r.Violations)
		}
	}
	res = Check(h, CheckOptions{KnownIssues: []string{KnownUninitializedReplica}})
	if st := res[3]; st.Verdict != Pass || st.Known[KnownUninitializedReplica] != 1 {
		t.Errorf("with the known issue tolerated: %s %v", st.Verdict, st.Known)
	}
	// The timeline of the violation renders.
	out := t.TempDir()
	files, err := writeTimelines(out, h, Check(h, CheckOptions{}))
	if err != nil || len(files) != 1 {
		t.Fatalf("timelines: %v %v", files, err)
	}
	b, err := os.ReadFile(filepath.Join(out, files[0]))
	if err != nil || !bytes.Contains(b, []byte("VIOLATION (stale)")) || !bytes.Contains(b, []byte("SIGSTOP n3")) {
		t.Errorf("timeline %s lacks the flagged op or the fault period (%d bytes, %v)", files[0], len(b), err)
	}
}
