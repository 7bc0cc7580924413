package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// ---- helpers ----

func txnLog(index uint64, spec TxnSpec) *raft.Log {
	return cmdLog(index, Command{Op: OpTxn, Value: spec.Encode()})
}

func prepareLog(index uint64, p TxnPart) *raft.Log {
	return cmdLog(index, Command{Op: OpTxnPrepare, Value: p.Encode()})
}

func resolveLog(index uint64, id string, commit, succeeded bool) *raft.Log {
	d := TxnDecision{ID: id, Commit: commit, Succeeded: succeeded}
	return cmdLog(index, Command{Op: OpTxnResolve, Value: d.Encode()})
}

func fenceLog(index uint64, id string) *raft.Log {
	d := TxnDecision{ID: id}
	return cmdLog(index, Command{Op: OpTxnFence, Value: d.Encode()})
}

func markerLog(index uint64) *raft.Log { return cmdLog(index, Command{Op: OpMarker}) }

func opPut(k, v string) TxnOp { return TxnOp{Kind: TxnPut, Key: []byte(k), Value: []byte(v)} }
func opDel(k string) TxnOp    { return TxnOp{Kind: TxnDelete, Key: []byte(k)} }
func opGet(k string) TxnOp    { return TxnOp{Kind: TxnGet, Key: []byte(k)} }

func opScan(k, end string, limit uint32) TxnOp {
	o := TxnOp{Kind: TxnScan, Key: []byte(k), Limit: limit}
	if end != "" {
		o.End = []byte(end)
	}
	return o
}

func cmpValue(k string, r CompareResult, v string) TxnCompare {
	return TxnCompare{Key: []byte(k), Target: CmpValue, Result: r, Value: []byte(v)}
}

func cmpExists(k string, r CompareResult, exists bool) TxnCompare {
	return TxnCompare{Key: []byte(k), Target: CmpExists, Result: r, Exists: exists}
}

func cmpVersion(k string, r CompareResult, v uint64) TxnCompare {
	return TxnCompare{Key: []byte(k), Target: CmpVersion, Result: r, Version: v}
}

func cmpRevision(k string, r CompareResult, rangeID, index uint64) TxnCompare {
	return TxnCompare{Key: []byte(k), Target: CmpRevision, Result: r, RangeID: rangeID, Index: index}
}

// apply1 applies one entry and returns its result.
func apply1(t *testing.T, f *RangeFSM, l *raft.Log) *Result {
	t.Helper()
	r, ok := f.ApplyBatch([]*raft.Log{l})[0].(*Result)
	if !ok || r == nil {
		t.Fatalf("entry %d: no result", l.Index)
	}
	return r
}

// applyTxnOK applies a transaction command that must succeed and return
// a TxnResult.
func applyTxnOK(t *testing.T, f *RangeFSM, l *raft.Log) *TxnResult {
	t.Helper()
	r := apply1(t, f, l)
	if r.Err != nil || r.Txn == nil {
		t.Fatalf("entry %d: err %v, txn %+v; want a transaction result", l.Index, r.Err, r.Txn)
	}
	return r.Txn
}

func wantLocked(t *testing.T, what string, r *Result, txn, key string) {
	t.Helper()
	var le *LockedError
	if !errors.As(r.Err, &le) || le.Txn != txn || string(le.Key) != key || !errors.Is(r.Err, ErrLocked) {
		t.Fatalf("%s: err %v, want a LockedError naming %s and key %q", what, r.Err, txn, key)
	}
}

// kvOf reads key with its revision and version (found false: missing).
func kvOf(t *testing.T, f *RangeFSM, key string) (KV, bool) {
	t.Helper()
	kvs, _, _, _, err := f.Scan([]byte(key), []byte(key+"\x00"), 1)
	if err != nil {
		t.Fatalf("scan %q: %v", key, err)
	}
	if len(kvs) == 0 {
		return KV{}, false
	}
	return kvs[0], true
}

func lockWriteString(w LockWrite) string {
	switch w.Kind {
	case TxnNone:
		return "-"
	case TxnPut:
		if w.Lease != 0 {
			return fmt.Sprintf("put=%s@%d", w.Value, w.Lease)
		}
		return "put=" + string(w.Value)
	case TxnDelete:
		return "del"
	}
	return fmt.Sprintf("kind%d", w.Kind)
}

// locksString renders a range's locks without their clock, sorted by key.
func locksString(locks map[string]Lock) []string {
	out := make([]string, 0, len(locks))
	for k, l := range locks {
		out = append(out, fmt.Sprintf("%s:%s s=%s f=%s", k, l.Txn, lockWriteString(l.Success), lockWriteString(l.Failure)))
	}
	slices.Sort(out)
	return out
}

func checkLocks(t *testing.T, what string, f *RangeFSM, want []string) {
	t.Helper()
	if got := locksString(f.Locks()); !slices.Equal(got, want) {
		t.Fatalf("%s: locks\n got  %q\n want %q", what, got, want)
	}
}

func checkOutcome(t *testing.T, what string, f *RangeFSM, id string, want *TxnOutcome) {
	t.Helper()
	got, ok := f.Outcome(id)
	switch {
	case want == nil && ok:
		t.Fatalf("%s: outcome of %s = %+v, want none", what, id, got)
	case want != nil && (!ok || got != *want):
		t.Fatalf("%s: outcome of %s = %+v (recorded %v), want %+v", what, id, got, ok, *want)
	}
}

// txnStateString is a range's transaction state and data, for comparing
// two stores.
func txnStateString(t *testing.T, f *RangeFSM, ids ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "applied %d\n", f.AppliedIndex())
	for _, l := range locksString(f.Locks()) {
		fmt.Fprintf(&b, "lock %s\n", l)
	}
	for _, id := range ids {
		o, ok := f.Outcome(id)
		fmt.Fprintf(&b, "outcome %s %v %+v\n", id, ok, o)
	}
	kvs, _, _, _, err := f.Scan(f.Descriptor().Start, nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s rev %d ver %d\n", kv.Key, kv.Value, kv.Revision, kv.Version)
	}
	return b.String()
}

// ---- 1. encodings ----

func TestTxnEncodings_RoundTripAndTruncation(t *testing.T) {
	spec := TxnSpec{
		ID: "txn-1",
		Compares: []TxnCompare{
			cmpValue("a", CmpEqual, "1"),
			cmpExists("b", CmpNotEqual, true),
			cmpVersion("c", CmpGreater, 300),
			cmpRevision("d", CmpLess, 7, 1<<40),
		},
		Success: []TxnOp{opPut("a", "2"), {Kind: TxnPut, Key: []byte("l"), Value: []byte("v"), Lease: 99}, opDel("b"), opGet("c"), opScan("a", "z", 70000)},
		Failure: []TxnOp{opScan("a", "", 0), opGet("\x00\xff")},
	}
	part := TxnPart{
		ID:       "txn-2",
		Compares: []TxnCompare{cmpValue("a", CmpEqual, "")},
		Reads:    [][]byte{[]byte("r1"), []byte("r2")},
		Success:  []TxnOp{opPut("a", "x")},
		Failure:  []TxnOp{opDel("a")},
	}
	lock := Lock{Txn: "txn-3", Success: LockWrite{Kind: TxnPut, Value: []byte("v"), Lease: 5}, Failure: LockWrite{Kind: TxnDelete}, At: 12345}
	tests := []struct {
		name   string
		enc    []byte
		decode func([]byte) (any, error)
		want   any
	}{
		{"spec", spec.Encode(), func(b []byte) (any, error) { return DecodeTxnSpec(b) }, spec},
		{"empty spec", (&TxnSpec{}).Encode(), func(b []byte) (any, error) { return DecodeTxnSpec(b) }, TxnSpec{}},
		{"part", part.Encode(), func(b []byte) (any, error) { return DecodeTxnPart(b) }, part},
		{"empty part", (&TxnPart{ID: "p"}).Encode(), func(b []byte) (any, error) { return DecodeTxnPart(b) }, TxnPart{ID: "p"}},
		{"decision", (&TxnDecision{ID: "d", Commit: true, Succeeded: true}).Encode(), func(b []byte) (any, error) { return DecodeTxnDecision(b) }, TxnDecision{ID: "d", Commit: true, Succeeded: true}},
		{"abort", (&TxnDecision{ID: "d"}).Encode(), func(b []byte) (any, error) { return DecodeTxnDecision(b) }, TxnDecision{ID: "d"}},
		// A lock's clock is this replica's, not replicated: it does not
		// travel.
		{"lock", lock.encode(), func(b []byte) (any, error) {
			l, err := decodeLock(b)
			if l == nil {
				return nil, err
			}
			return *l, err
		}, Lock{Txn: lock.Txn, Success: lock.Success, Failure: lock.Failure}},
		{"outcome", (&TxnOutcome{Index: 1 << 50, State: TxnCommitted, Succeeded: true}).encode(), func(b []byte) (any, error) { return decodeOutcome(b) }, TxnOutcome{Index: 1 << 50, State: TxnCommitted, Succeeded: true}},
		{"aborted outcome", (&TxnOutcome{Index: 3, State: TxnAborted}).encode(), func(b []byte) (any, error) { return decodeOutcome(b) }, TxnOutcome{Index: 3, State: TxnAborted}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.decode(tc.enc)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			// %+v prints nil and empty slices alike, which the encoding
			// does not tell apart either.
			if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", tc.want); g != w {
				t.Fatalf("round trip:\n got  %s\n want %s", g, w)
			}
			for i := range len(tc.enc) {
				if _, err := tc.decode(tc.enc[:i]); !errors.Is(err, ErrBadCommand) {
					t.Fatalf("truncated to %d of %d bytes: err %v, want ErrBadCommand", i, len(tc.enc), err)
				}
			}
			bad := bytes.Clone(tc.enc)
			bad[0] = txnEncVersion + 1
			if _, err := tc.decode(bad); !errors.Is(err, ErrBadCommand) {
				t.Fatalf("unknown version: err %v, want ErrBadCommand", err)
			}
			// Damage anywhere is an error or a value, never a panic.
			for i := range len(tc.enc) {
				for _, b := range []byte{0x00, 0x7f, 0x80, 0xff} {
					bad := bytes.Clone(tc.enc)
					bad[i] = b
					_, _ = tc.decode(bad)
				}
			}
		})
	}
	// A list count larger than the payload could hold is refused before
	// anything is allocated for it.
	huge := []byte{txnEncVersion, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := DecodeTxnSpec(huge); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("huge compare count: err %v, want ErrBadCommand", err)
	}
	if _, err := DecodeTxnPart(huge); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("huge compare count in a part: err %v, want ErrBadCommand", err)
	}
}

// TestResultEncoding_RoundTripAndTruncation: a result proposed through
// another node comes back as it was, its error kind included, and a cut
// one is an error, never a panic.
func TestResultEncoding_RoundTripAndTruncation(t *testing.T) {
	kv := KV{Key: []byte("k"), Value: []byte("v"), Revision: 7, Version: 2, Lease: 3}
	tests := []struct {
		name string
		res  Result
		is   error
	}{
		{"plain", Result{Revision: 5, Existed: true, Deleted: 2}, nil},
		{"wrong range", Result{Revision: 5, Err: ErrWrongRange}, ErrWrongRange},
		{"locked", Result{Revision: 5, Err: &LockedError{Txn: "p", Key: []byte("k")}}, ErrLocked},
		{"fenced", Result{Revision: 5, Err: ErrTxnFenced, Txn: &TxnResult{Outcome: &TxnOutcome{Index: 4, State: TxnAborted}}}, ErrTxnFenced},
		{"compare failed", Result{Revision: 5, Err: ErrCompareFailed}, ErrCompareFailed},
		{"transaction", Result{Revision: 9, Txn: &TxnResult{Succeeded: true, Ops: []TxnOpResult{
			{Kind: TxnGet, Found: true, KV: kv},
			{Kind: TxnPut},
			{Kind: TxnDelete, Found: true},
			{Kind: TxnScan, KVs: []KV{kv, kv}, More: true, Next: []byte("n")},
		}}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := EncodeResult(&tc.res)
			got, err := DecodeResult(enc)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !errors.Is(got.Err, tc.is) || (tc.is == nil) != (got.Err == nil) {
				t.Fatalf("error %v, want one that is %v", got.Err, tc.is)
			}
			var le *LockedError
			if errors.As(tc.res.Err, &le) && got.Err.Error() != tc.res.Err.Error() {
				t.Fatalf("lock error %q, want %q", got.Err, tc.res.Err)
			}
			// %+v shows pointers as addresses: compare what they point to.
			render := func(r *Result) string {
				c := *r
				c.Err, c.Txn = nil, nil
				out := fmt.Sprintf("%+v", c)
				if r.Txn != nil {
					tr := *r.Txn
					tr.Outcome = nil
					out += fmt.Sprintf(" txn %+v", tr)
					if r.Txn.Outcome != nil {
						out += fmt.Sprintf(" outcome %+v", *r.Txn.Outcome)
					}
				}
				return out
			}
			if g, w := render(got), render(&tc.res); g != w {
				t.Fatalf("round trip:\n got  %s\n want %s", g, w)
			}
			for i := range len(enc) {
				if _, err := DecodeResult(enc[:i]); !errors.Is(err, ErrBadCommand) {
					t.Fatalf("truncated to %d of %d bytes: err %v, want ErrBadCommand", i, len(enc), err)
				}
			}
		})
	}
}

// TestCommand_TxnRoundTrip: a transaction command travels through the
// Raft log as any other command.
func TestCommand_TxnRoundTrip(t *testing.T) {
	spec := TxnSpec{ID: "t", Success: []TxnOp{opPut("a", "1")}}
	part := TxnPart{ID: "p", Reads: [][]byte{[]byte("r")}}
	dec := TxnDecision{ID: "p", Commit: true}
	tests := []struct {
		op    Op
		value []byte
	}{
		{OpTxn, spec.Encode()},
		{OpTxnPrepare, part.Encode()},
		{OpTxnResolve, dec.Encode()},
		{OpTxnFence, (&TxnDecision{ID: "t"}).Encode()},
	}
	for _, tc := range tests {
		c := Command{Op: tc.op, Value: tc.value}
		got, err := DecodeCommand(c.Encode(nil))
		if err != nil || got.Op != tc.op || !bytes.Equal(got.Value, tc.value) {
			t.Errorf("op %d: decoded %+v, err %v; want the op with its payload", tc.op, got, err)
		}
	}
}

// ---- 2. single-range transactions ----

func TestOpTxn_Compares(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	// a = "3" at version 2, revision 3; b = "2" at version 1, revision 2.
	// Versions count from the range's first transaction: a at index 1.
	f.ApplyBatch([]*raft.Log{txnLog(1, TxnSpec{Success: []TxnOp{opPut("a", "1")}}), put(2, "b", "2"), put(3, "a", "3")})
	tests := []struct {
		name string
		cmps []TxnCompare
		want bool
	}{
		{"no compares", nil, true},
		{"value equal", []TxnCompare{cmpValue("a", CmpEqual, "3")}, true},
		{"value equal, other", []TxnCompare{cmpValue("a", CmpEqual, "1")}, false},
		{"value not equal", []TxnCompare{cmpValue("a", CmpNotEqual, "1")}, true},
		{"value greater", []TxnCompare{cmpValue("a", CmpGreater, "2")}, true},
		{"value not greater", []TxnCompare{cmpValue("a", CmpGreater, "3")}, false},
		{"value less", []TxnCompare{cmpValue("a", CmpLess, "4")}, true},
		{"value not less", []TxnCompare{cmpValue("a", CmpLess, "2")}, false},
		{"value of a missing key", []TxnCompare{cmpValue("nokey", CmpEqual, "")}, false},
		{"value of a missing key, not equal", []TxnCompare{cmpValue("nokey", CmpNotEqual, "x")}, false},
		{"exists", []TxnCompare{cmpExists("a", CmpEqual, true)}, true},
		{"exists, missing", []TxnCompare{cmpExists("nokey", CmpEqual, true)}, false},
		{"missing", []TxnCompare{cmpExists("nokey", CmpEqual, false)}, true},
		{"exists not equal", []TxnCompare{cmpExists("a", CmpNotEqual, true)}, false},
		{"exists not equal false", []TxnCompare{cmpExists("a", CmpNotEqual, false)}, true},
		{"exists greater is never true", []TxnCompare{cmpExists("a", CmpGreater, false)}, false},
		{"version equal", []TxnCompare{cmpVersion("a", CmpEqual, 2)}, true},
		{"version equal, new key", []TxnCompare{cmpVersion("b", CmpEqual, 1)}, true},
		{"version of a missing key is 0", []TxnCompare{cmpVersion("nokey", CmpEqual, 0)}, true},
		{"version greater", []TxnCompare{cmpVersion("a", CmpGreater, 1)}, true},
		{"version not greater", []TxnCompare{cmpVersion("a", CmpGreater, 2)}, false},
		{"version less", []TxnCompare{cmpVersion("a", CmpLess, 3)}, true},
		{"version not less", []TxnCompare{cmpVersion("a", CmpLess, 2)}, false},
		{"revision equal", []TxnCompare{cmpRevision("a", CmpEqual, feedRange, 3)}, true},
		{"revision equal, older", []TxnCompare{cmpRevision("a", CmpEqual, feedRange, 1)}, false},
		{"revision of another range never equal", []TxnCompare{cmpRevision("a", CmpEqual, feedRange+1, 3)}, false},
		{"revision of another range not equal", []TxnCompare{cmpRevision("a", CmpNotEqual, feedRange+1, 3)}, true},
		{"revision of another range never greater", []TxnCompare{cmpRevision("a", CmpGreater, feedRange+1, 0)}, false},
		{"revision of another range never less", []TxnCompare{cmpRevision("a", CmpLess, feedRange+1, 1<<60)}, false},
		{"revision greater", []TxnCompare{cmpRevision("a", CmpGreater, feedRange, 2)}, true},
		{"revision not greater", []TxnCompare{cmpRevision("a", CmpGreater, feedRange, 3)}, false},
		{"revision less", []TxnCompare{cmpRevision("b", CmpLess, feedRange, 3)}, true},
		{"revision not less", []TxnCompare{cmpRevision("b", CmpLess, feedRange, 2)}, false},
		{"revision of a missing key is 0", []TxnCompare{cmpRevision("nokey", CmpEqual, feedRange, 0)}, true},
		{"all hold", []TxnCompare{cmpValue("a", CmpEqual, "3"), cmpVersion("b", CmpEqual, 1), cmpExists("nokey", CmpEqual, false)}, true},
		{"one fails", []TxnCompare{cmpValue("a", CmpEqual, "3"), cmpVersion("b", CmpEqual, 2), cmpExists("nokey", CmpEqual, false)}, false},
		{"unknown target", []TxnCompare{{Key: []byte("a"), Target: 9}}, false},
		{"unknown result", []TxnCompare{{Key: []byte("a"), Target: CmpValue, Result: 9, Value: []byte("3")}}, false},
	}
	index := uint64(3)
	for _, tc := range tests {
		index++
		spec := TxnSpec{Compares: tc.cmps, Success: []TxnOp{opPut("out", "success")}, Failure: []TxnOp{opPut("out", "failure")}}
		r := applyTxnOK(t, f, txnLog(index, spec))
		want := map[bool]string{true: "success", false: "failure"}[tc.want]
		if r.Succeeded != tc.want || len(r.Ops) != 1 || r.Ops[0].Kind != TxnPut || r.Outcome != nil {
			t.Errorf("%s: result %+v, want succeeded %v with one put", tc.name, r, tc.want)
		}
		if kv, _ := kvOf(t, f, "out"); string(kv.Value) != want || kv.Revision != index {
			t.Errorf("%s: out = %q at %d, want %q at %d", tc.name, kv.Value, kv.Revision, want, index)
		}
	}
	// Compares change nothing.
	if kv, _ := kvOf(t, f, "a"); string(kv.Value) != "3" || kv.Revision != 3 || kv.Version != 2 {
		t.Fatalf("a after the compares: %+v", kv)
	}
}

func TestOpTxn_OpResults(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	// Versions count from the range's first transaction: a at index 1.
	f.ApplyBatch([]*raft.Log{txnLog(1, TxnSpec{Success: []TxnOp{opPut("a", "1")}}), put(2, "b", "2"), put(3, "c", "3"), put(4, "c", "33")})
	spec := TxnSpec{Success: []TxnOp{
		opGet("a"), opGet("nokey"), opDel("b"), opDel("nokey"), opPut("d", "4"),
		opScan("a", "z", 10), opScan("a", "", 2), opScan("a", "z", 0), opGet("d"), opGet("c"),
		{Kind: TxnNone, Key: []byte("ignored")},
	}}
	r := applyTxnOK(t, f, txnLog(5, spec))
	if !r.Succeeded {
		t.Fatal("a transaction without compares failed")
	}
	kvs := func(kvs []KV) string {
		var out []string
		for _, kv := range kvs {
			out = append(out, fmt.Sprintf("%s=%s@%d/v%d", kv.Key, kv.Value, kv.Revision, kv.Version))
		}
		return strings.Join(out, " ")
	}
	render := func(o TxnOpResult) string {
		switch o.Kind {
		case TxnGet:
			if !o.Found {
				return "get missing"
			}
			return "get " + kvs([]KV{o.KV})
		case TxnDelete:
			return fmt.Sprintf("del found=%v", o.Found)
		case TxnPut:
			return "put"
		case TxnScan:
			return fmt.Sprintf("scan [%s] more=%v next=%s", kvs(o.KVs), o.More, o.Next)
		}
		return fmt.Sprintf("kind %d", o.Kind)
	}
	// Reads see the transaction's own earlier writes: b is gone from the
	// scans and d is in them.
	want := []string{
		"get a=1@1/v1",
		"get missing",
		"del found=true",
		"del found=false",
		"put",
		"scan [a=1@1/v1 c=33@4/v2 d=4@5/v1] more=false next=",
		"scan [a=1@1/v1 c=33@4/v2] more=true next=d",
		"scan [a=1@1/v1 c=33@4/v2 d=4@5/v1] more=false next=",
		"get d=4@5/v1",
		"get c=33@4/v2",
	}
	var got []string
	for _, o := range r.Ops {
		got = append(got, render(o))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("op results:\n got  %q\n want %q", got, want)
	}
}

// TestOpTxn_WritesAtOneIndex: every write of a transaction is at its
// index, and its events are that index's, numbered in the order of the
// operations, before and after they reach bbolt.
func TestOpTxn_WritesAtOneIndex(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "z", "1")})
	applyTxnOK(t, f, txnLog(3, TxnSpec{Success: []TxnOp{opPut("y", "2"), opPut("x", "1"), opDel("a"), opDel("nokey"), opGet("z")}}))
	want := []string{"3 put y=2", "3 put x=1", "3 del a prev=1"}
	check := func(when string) {
		t.Helper()
		evs := allEvents(t, f, 2)
		checkEvents(t, when, evs, want)
		for i, e := range evs {
			if e.Seq != uint32(i) {
				t.Fatalf("%s: event %d has seq %d", when, i, e.Seq)
			}
		}
		for _, k := range []string{"x", "y"} {
			if kv, ok := kvOf(t, f, k); !ok || kv.Revision != 3 {
				t.Fatalf("%s: %s = %+v, want revision 3", when, k, kv)
			}
		}
		if kv, _ := kvOf(t, f, "z"); kv.Revision != 2 {
			t.Fatalf("%s: a get moved z's revision to %d", when, kv.Revision)
		}
		mustMissing(t, f, "a")
	}
	check("in the overlay")
	mustFlush(t, s)
	check("committed")
}

func TestOpTxn_Versions(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	steps := []struct {
		name string
		log  func(index uint64) *raft.Log
		want uint64 // 0: missing
	}{
		{"created", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opPut("v", "a")}}) }, 1},
		{"put", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opPut("v", "b")}}) }, 2},
		{"plain put", func(i uint64) *raft.Log { return put(i, "v", "c") }, 3},
		{"put again", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opPut("v", "d")}}) }, 4},
		{"get", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opGet("v")}}) }, 4},
		{"deleted", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opDel("v")}}) }, 0},
		{"created again", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opPut("v", "e")}}) }, 1},
		{"plain delete", func(i uint64) *raft.Log { return del(i, "v") }, 0},
		{"plain create", func(i uint64) *raft.Log { return put(i, "v", "f") }, 1},
	}
	for i, st := range steps {
		index := uint64(2*i + 1) // the step, then its compare
		if r := apply1(t, f, st.log(index)); r.Err != nil {
			t.Fatalf("%s: %v", st.name, r.Err)
		}
		if i == 3 {
			mustFlush(t, s) // versions read back from bbolt too
		}
		kv, found := kvOf(t, f, "v")
		if found != (st.want != 0) || kv.Version != st.want {
			t.Fatalf("%s: v = %+v (found %v), want version %d", st.name, kv, found, st.want)
		}
		// The compare sees the same version the reads do.
		r := applyTxnOK(t, f, txnLog(index+1, TxnSpec{Compares: []TxnCompare{cmpVersion("v", CmpEqual, st.want)}}))
		if !r.Succeeded {
			t.Fatalf("%s: compare version == %d failed", st.name, st.want)
		}
	}
}

// TestOpTxn_KeyWrittenBeforeVersions: a key stored by a release without
// versions counts as version 1, to compares and reads alike, and its next
// put makes it 2.
func TestOpTxn_KeyWrittenBeforeVersions(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{put(1, "other", "x")})
	corrupt(t, s, f, "old", encodeStored(keyInfo{rev: 1}, []byte("v")))
	r := applyTxnOK(t, f, txnLog(2, TxnSpec{Compares: []TxnCompare{cmpVersion("old", CmpEqual, 1)}, Success: []TxnOp{opGet("old"), opPut("old", "w"), opGet("old")}}))
	if !r.Succeeded || len(r.Ops) != 3 || r.Ops[0].KV.Version != 1 || r.Ops[2].KV.Version != 2 {
		t.Fatalf("transaction over a key without a version: %+v", r)
	}
}

func TestOpTxn_KeyOutsideTheRange(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f, err := s.OpenRange(Descriptor{ID: feedRange, Start: []byte("b"), End: []byte("m"), Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{put(1, "c", "orig")})
	write := opPut("c", "changed")
	tests := []struct {
		name string
		spec TxnSpec
	}{
		{"put after the end", TxnSpec{Success: []TxnOp{write, opPut("z", "1")}}},
		{"put at the end", TxnSpec{Success: []TxnOp{write, opPut("m", "1")}}},
		{"put before the start", TxnSpec{Success: []TxnOp{opPut("a", "1"), write}}},
		{"compare", TxnSpec{Compares: []TxnCompare{cmpExists("z", CmpEqual, false)}, Success: []TxnOp{write}}},
		{"get", TxnSpec{Success: []TxnOp{write, opGet("a")}}},
		{"delete in the branch not taken", TxnSpec{Success: []TxnOp{write}, Failure: []TxnOp{opDel("z")}}},
		{"scan to the end of the key space", TxnSpec{Success: []TxnOp{write, opScan("c", "", 0)}}},
		{"scan past the end", TxnSpec{Success: []TxnOp{write, opScan("c", "n", 0)}}},
		{"scan from before the start", TxnSpec{Success: []TxnOp{write, opScan("a", "d", 0)}}},
	}
	for i, tc := range tests {
		tc.spec.ID = "wrong-" + tc.name
		index := uint64(i + 2)
		r := apply1(t, f, txnLog(index, tc.spec))
		if !errors.Is(r.Err, ErrWrongRange) {
			t.Errorf("%s: err %v, want ErrWrongRange", tc.name, r.Err)
		}
		if kv, _ := kvOf(t, f, "c"); string(kv.Value) != "orig" || kv.Revision != 1 {
			t.Fatalf("%s: c = %+v, want orig at 1", tc.name, kv)
		}
		checkOutcome(t, tc.name, f, tc.spec.ID, nil)
	}
	checkEvents(t, "after refused transactions", allEvents(t, f, 1), nil)
	// In the range, the same shapes apply.
	r := applyTxnOK(t, f, txnLog(100, TxnSpec{Success: []TxnOp{write, opScan("b", "m", 0), opGet("l")}}))
	if len(r.Ops) != 3 || len(r.Ops[1].KVs) != 1 {
		t.Fatalf("transaction within the range: %+v", r)
	}
	mustGet(t, f, "c", "changed")
}

// TestOpTxn_OutcomeAndFence: a transaction with an id applies once; a
// fence before it makes it never apply, a fence after it reports how it
// went.
func TestOpTxn_OutcomeAndFence(t *testing.T) {
	succeeds := TxnSpec{ID: "t", Compares: []TxnCompare{cmpExists("k", CmpEqual, false)}, Success: []TxnOp{opPut("k", "s")}, Failure: []TxnOp{opPut("f", "x")}}
	fails := TxnSpec{ID: "t", Compares: []TxnCompare{cmpExists("k", CmpEqual, true)}, Success: []TxnOp{opPut("k", "s")}, Failure: []TxnOp{opPut("f", "x")}}
	type step struct {
		log     func(index uint64) *raft.Log
		err     error
		outcome *TxnOutcome // the result's
	}
	txn := func(spec TxnSpec) func(uint64) *raft.Log {
		return func(i uint64) *raft.Log { return txnLog(i, spec) }
	}
	fence := func(i uint64) *raft.Log { return fenceLog(i, "t") }
	tests := []struct {
		name     string
		steps    []step
		recorded TxnOutcome
		k, f     string // values after ("": missing)
		events   []string
	}{
		{"applied twice", []step{{txn(succeeds), nil, nil}, {txn(succeeds), nil, &TxnOutcome{Index: 2, State: TxnCommitted, Succeeded: true}}},
			TxnOutcome{Index: 2, State: TxnCommitted, Succeeded: true}, "s", "", []string{"2 put k=s"}},
		{"failed compares, applied twice", []step{{txn(fails), nil, nil}, {txn(fails), nil, &TxnOutcome{Index: 2, State: TxnCommitted}}},
			TxnOutcome{Index: 2, State: TxnCommitted}, "", "x", []string{"2 put f=x"}},
		{"fenced first", []step{{fence, nil, &TxnOutcome{Index: 2, State: TxnAborted}}, {txn(succeeds), ErrTxnFenced, &TxnOutcome{Index: 2, State: TxnAborted}}},
			TxnOutcome{Index: 2, State: TxnAborted}, "", "", nil},
		{"fenced after", []step{{txn(succeeds), nil, nil}, {fence, nil, &TxnOutcome{Index: 2, State: TxnCommitted, Succeeded: true}}},
			TxnOutcome{Index: 2, State: TxnCommitted, Succeeded: true}, "s", "", []string{"2 put k=s"}},
		{"fenced after failed compares", []step{{txn(fails), nil, nil}, {fence, nil, &TxnOutcome{Index: 2, State: TxnCommitted}}},
			TxnOutcome{Index: 2, State: TxnCommitted}, "", "x", []string{"2 put f=x"}},
		{"fenced twice", []step{{fence, nil, &TxnOutcome{Index: 2, State: TxnAborted}}, {fence, nil, &TxnOutcome{Index: 2, State: TxnAborted}}, {txn(succeeds), ErrTxnFenced, &TxnOutcome{Index: 2, State: TxnAborted}}},
			TxnOutcome{Index: 2, State: TxnAborted}, "", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f := mustRange(t, s, feedRange)
			f.ApplyBatch([]*raft.Log{put(1, "other", "o")})
			for i, st := range tc.steps {
				r := apply1(t, f, st.log(uint64(i+2)))
				if !errors.Is(r.Err, st.err) || r.Txn == nil {
					t.Fatalf("step %d: err %v txn %+v, want err %v", i, r.Err, r.Txn, st.err)
				}
				switch {
				case st.outcome == nil && r.Txn.Outcome != nil:
					t.Fatalf("step %d: outcome %+v, want the transaction to run", i, *r.Txn.Outcome)
				case st.outcome != nil && (r.Txn.Outcome == nil || *r.Txn.Outcome != *st.outcome || r.Txn.Succeeded != st.outcome.Succeeded):
					t.Fatalf("step %d: result %+v, want outcome %+v", i, r.Txn, *st.outcome)
				}
			}
			checkOutcome(t, "after", f, "t", &tc.recorded)
			for k, want := range map[string]string{"k": tc.k, "f": tc.f} {
				if want == "" {
					mustMissing(t, f, k)
				} else {
					mustGet(t, f, k, want)
				}
			}
			checkEvents(t, "events", allEvents(t, f, 1), tc.events)
		})
	}
}

// ---- 3. prepare and resolve ----

// preparedRange is a range with transaction p1 prepared at index 4 over
// a (compared, written), r and nokey (read), d (deleted on success) and f
// (written on failure).
func preparedRange(t *testing.T, s *Store, cmpHolds bool) (*RangeFSM, *TxnResult) {
	t.Helper()
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "r", "read"), put(3, "d", "del")})
	want := "1"
	if !cmpHolds {
		want = "other"
	}
	r := applyTxnOK(t, f, prepareLog(4, TxnPart{
		ID:       "p1",
		Compares: []TxnCompare{cmpValue("a", CmpEqual, want)},
		Reads:    [][]byte{[]byte("r"), []byte("nokey")},
		Success:  []TxnOp{opPut("a", "2"), opDel("d")},
		Failure:  []TxnOp{opPut("f", "failed")},
	}))
	return f, r
}

var p1Locks = []string{
	"a:p1 s=put=2 f=-",
	"d:p1 s=del f=-",
	"f:p1 s=- f=put=failed",
	"nokey:p1 s=- f=-",
	"r:p1 s=- f=-",
}

func TestTxnPrepare_LocksEveryKey(t *testing.T) {
	for _, holds := range []bool{true, false} {
		t.Run(fmt.Sprintf("compares hold %v", holds), func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f, r := preparedRange(t, s, holds)
			if r.Succeeded != holds {
				t.Fatalf("succeeded %v, want %v", r.Succeeded, holds)
			}
			if len(r.Ops) != 2 || !r.Ops[0].Found || string(r.Ops[0].KV.Value) != "read" || r.Ops[0].KV.Revision != 2 || r.Ops[1].Found {
				t.Fatalf("reads: %+v", r.Ops)
			}
			checkLocks(t, "after prepare", f, p1Locks)
			for k := range f.Locks() {
				l, ok := f.LockOf([]byte(k))
				if !ok || l.Txn != "p1" || l.At == 0 {
					t.Fatalf("lock of %s: %+v %v", k, l, ok)
				}
			}
			if got := locksString(f.LocksIn([]byte("b"), []byte("g"))); !slices.Equal(got, p1Locks[1:3]) {
				t.Fatalf("locks in [b, g): %q", got)
			}
			// A prepare writes nothing yet.
			mustGet(t, f, "a", "1")
			mustGet(t, f, "d", "del")
			mustMissing(t, f, "f")
			checkEvents(t, "events of a prepare", allEvents(t, f, 3), nil)
		})
	}
}

func TestTxnPrepare_LockedKeysRefuseOthers(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f, _ := preparedRange(t, s, true)
	tests := []struct {
		name string
		log  func(index uint64) *raft.Log
		key  string
	}{
		{"put", func(i uint64) *raft.Log { return put(i, "a", "x") }, "a"},
		{"put of a read key", func(i uint64) *raft.Log { return put(i, "r", "x") }, "r"},
		{"put of a missing read key", func(i uint64) *raft.Log { return put(i, "nokey", "x") }, "nokey"},
		{"lease put", func(i uint64) *raft.Log { return leasePut(i, "a", "x", 7) }, "a"},
		{"delete", func(i uint64) *raft.Log { return del(i, "d") }, "d"},
		{"compare-and-swap", func(i uint64) *raft.Log { return cas(i, "a", "1", "x") }, "a"},
		{"compare-and-swap of a missing key", func(i uint64) *raft.Log { return casMissing(i, "f", "x") }, "f"},
		{"another prepare", func(i uint64) *raft.Log {
			return prepareLog(i, TxnPart{ID: "p2", Reads: [][]byte{[]byte("free")}, Success: []TxnOp{opPut("free2", "x"), opPut("r", "x")}})
		}, "r"},
		{"another prepare's compare", func(i uint64) *raft.Log {
			return prepareLog(i, TxnPart{ID: "p2", Compares: []TxnCompare{cmpExists("d", CmpEqual, true)}, Success: []TxnOp{opPut("free2", "x")}})
		}, "d"},
		{"a transaction's compare", func(i uint64) *raft.Log {
			return txnLog(i, TxnSpec{Compares: []TxnCompare{cmpExists("nokey", CmpEqual, false)}, Success: []TxnOp{opPut("free", "x")}})
		}, "nokey"},
		{"a transaction's get", func(i uint64) *raft.Log { return txnLog(i, TxnSpec{Success: []TxnOp{opPut("free", "x"), opGet("r")}}) }, "r"},
		{"a transaction's scan", func(i uint64) *raft.Log {
			return txnLog(i, TxnSpec{Success: []TxnOp{opPut("free", "x"), opScan("q", "s", 0)}})
		}, "r"},
		{"a transaction's other branch", func(i uint64) *raft.Log {
			return txnLog(i, TxnSpec{Success: []TxnOp{opPut("free", "x")}, Failure: []TxnOp{opDel("a")}})
		}, "a"},
	}
	for i, tc := range tests {
		r := apply1(t, f, tc.log(uint64(i+5)))
		wantLocked(t, tc.name, r, "p1", tc.key)
	}
	checkLocks(t, "after the refused writes", f, p1Locks)
	mustGet(t, f, "a", "1")
	mustGet(t, f, "r", "read")
	mustGet(t, f, "d", "del")
	for _, k := range []string{"f", "nokey", "free", "free2"} {
		mustMissing(t, f, k)
	}
	checkEvents(t, "events of refused writes", allEvents(t, f, 3), nil)

	next := uint64(len(tests) + 5)
	// Keys no one holds are written as ever, and reads are not refused.
	if r := apply1(t, f, put(next, "free", "x")); r.Err != nil {
		t.Fatalf("put of a free key: %v", r.Err)
	}
	if r := applyTxnOK(t, f, txnLog(next+1, TxnSpec{Success: []TxnOp{opScan("s", "", 0)}})); len(r.Ops[0].KVs) != 0 {
		t.Fatalf("scan of an empty span with no locks: %+v", r.Ops)
	}
	// The holder may prepare again (a retried proposal).
	if r := apply1(t, f, prepareLog(next+2, TxnPart{ID: "p1", Reads: [][]byte{[]byte("r")}, Success: []TxnOp{opPut("a", "2")}})); r.Err != nil {
		t.Fatalf("the holder's second prepare: %v", r.Err)
	}
	if l, _ := f.LockOf([]byte("r")); l.Txn != "p1" {
		t.Fatalf("r after the second prepare: %+v", l)
	}
}

func TestTxnPrepare_Refused(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f, err := s.OpenRange(Descriptor{ID: feedRange, Start: []byte("b"), End: []byte("m"), Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		part TxnPart
		err  error
	}{
		{"read outside", TxnPart{ID: "x", Reads: [][]byte{[]byte("c"), []byte("z")}}, ErrWrongRange},
		{"write outside", TxnPart{ID: "x", Success: []TxnOp{opPut("c", "1"), opPut("a", "1")}}, ErrWrongRange},
		{"get in a prepare's writes", TxnPart{ID: "x", Success: []TxnOp{opGet("c")}}, ErrBadCommand},
		{"scan in a prepare's writes", TxnPart{ID: "x", Failure: []TxnOp{opScan("c", "d", 0)}}, ErrBadCommand},
	}
	for i, tc := range tests {
		if r := apply1(t, f, prepareLog(uint64(i+1), tc.part)); !errors.Is(r.Err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, r.Err, tc.err)
		}
		checkLocks(t, tc.name, f, []string{})
	}
	// A transaction on the meta range is refused.
	m := mustRange(t, s, MetaRangeID)
	if r := apply1(t, m, txnLog(1, TxnSpec{Success: []TxnOp{opPut("k", "v")}})); !errors.Is(r.Err, ErrBadCommand) {
		t.Fatalf("transaction on the meta range: %v, want ErrBadCommand", r.Err)
	}
}

func TestTxnResolve(t *testing.T) {
	tests := []struct {
		name              string
		commit, succeeded bool
		values            map[string]string // "": missing
		events            []string
	}{
		{"commit, compares held", true, true, map[string]string{"a": "2", "d": "", "f": "", "r": "read"}, []string{"6 put a=2 prev=1", "6 del d prev=del"}},
		{"commit, compares failed", true, false, map[string]string{"a": "1", "d": "del", "f": "failed", "r": "read"}, []string{"6 put f=failed"}},
		{"abort", false, true, map[string]string{"a": "1", "d": "del", "f": "", "r": "read"}, nil},
		{"abort, compares failed", false, false, map[string]string{"a": "1", "d": "del", "f": "", "r": "read"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f, _ := preparedRange(t, s, tc.succeeded)
			f.ApplyBatch([]*raft.Log{put(5, "other", "x")})
			r := apply1(t, f, resolveLog(6, "p1", tc.commit, tc.succeeded))
			if r.Err != nil {
				t.Fatalf("resolve: %v", r.Err)
			}
			// Result.Deleted is documented as how many locks a resolve
			// ended, whichever the decision.
			if r.Deleted != len(p1Locks) {
				t.Errorf("resolve ended %d locks, want %d", r.Deleted, len(p1Locks))
			}
			checkLocks(t, "after resolve", f, []string{})
			for k, want := range tc.values {
				if want == "" {
					mustMissing(t, f, k)
				} else {
					mustGet(t, f, k, want)
				}
			}
			evs := allEvents(t, f, 5)
			checkEvents(t, "events of the resolve", evs, tc.events)
			for i, e := range evs {
				if e.Seq != uint32(i) {
					t.Fatalf("event %d has seq %d", i, e.Seq)
				}
			}
			if tc.commit && tc.succeeded {
				if kv, _ := kvOf(t, f, "a"); kv.Revision != 6 || kv.Version != 2 {
					t.Fatalf("a after commit: %+v, want revision 6 version 2", kv)
				}
			}
			// The keys are free again, and a second resolve finds nothing.
			if r := apply1(t, f, put(7, "a", "after")); r.Err != nil {
				t.Fatalf("put after resolve: %v", r.Err)
			}
			if r := apply1(t, f, resolveLog(8, "p1", true, true)); r.Err != nil || r.Deleted != 0 {
				t.Fatalf("second resolve: %+v", r)
			}
			mustGet(t, f, "a", "after")
			// A prepare's locks record no outcome: the cross-range record
			// lives with the coordinator.
			checkOutcome(t, "after resolve", f, "p1", nil)
		})
	}
}

// TestTxnResolve_OnlyItsOwnLocks: resolving one transaction leaves
// another's locks in place.
func TestTxnResolve_OnlyItsOwnLocks(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	applyTxnOK(t, f, prepareLog(1, TxnPart{ID: "p1", Success: []TxnOp{opPut("a", "1")}}))
	applyTxnOK(t, f, prepareLog(2, TxnPart{ID: "p2", Success: []TxnOp{opPut("b", "2")}}))
	if r := apply1(t, f, resolveLog(3, "p1", true, true)); r.Err != nil {
		t.Fatal(r.Err)
	}
	checkLocks(t, "after resolving p1", f, []string{"b:p2 s=put=2 f=-"})
	mustGet(t, f, "a", "1")
	mustMissing(t, f, "b")
}

// ---- 4. persistence ----

// txnHistory leaves locks (p1 on a, b, r; p2 on z, resolved later in some
// cases) and outcomes (t1 committed, t2 aborted, t3 committed with failed
// compares).
func txnHistory() []*raft.Log {
	return []*raft.Log{
		put(1, "a", "1"),
		put(2, "r", "read"),
		prepareLog(3, TxnPart{ID: "p1", Reads: [][]byte{[]byte("r")}, Success: []TxnOp{opPut("a", "2")}, Failure: []TxnOp{{Kind: TxnPut, Key: []byte("b"), Value: []byte("f"), Lease: 9}}}),
		txnLog(4, TxnSpec{ID: "t1", Success: []TxnOp{opPut("c", "3")}}),
		fenceLog(5, "t2"),
		prepareLog(6, TxnPart{ID: "p2", Success: []TxnOp{opDel("z")}}),
		txnLog(7, TxnSpec{ID: "t3", Compares: []TxnCompare{cmpExists("c", CmpEqual, false)}, Failure: []TxnOp{opPut("e", "4")}}),
		resolveLog(8, "p2", true, true),
	}
}

var historyLocks = []string{"a:p1 s=put=2 f=-", "b:p1 s=- f=put=f@9", "r:p1 s=- f=-"}

func TestTxnState_SurvivesRestart(t *testing.T) {
	logs := txnHistory()
	tests := []struct {
		name    string
		flushAt int // entries applied before the flush; -1: none
	}{
		{"flushed", len(logs)},
		{"crash before any flush", -1},
		{"crash after the prepares, before the resolve", 7},
		{"crash before the outcomes", 3},
	}
	ids := []string{"t1", "t2", "t3", "p1"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			f := mustRange(t, s, feedRange)
			if tc.flushAt >= 0 {
				f.ApplyBatch(logs[:tc.flushAt])
				mustFlush(t, s)
				f.ApplyBatch(logs[tc.flushAt:])
			} else {
				f.ApplyBatch(logs)
			}
			checkLocks(t, "before the crash", f, historyLocks)
			want := txnStateString(t, f, ids...)
			crash(s)

			s2 := openStore(t, dir)
			defer s2.Close()
			g := mustRange(t, s2, feedRange)
			if tc.flushAt < len(logs) {
				// What the flush did not cover comes back from the log.
				g.ApplyBatch(logs)
			}
			if got := txnStateString(t, g, ids...); got != want {
				t.Fatalf("after restart:\n%s\nwant:\n%s", got, want)
			}
			checkOutcome(t, "t1", g, "t1", &TxnOutcome{Index: 4, State: TxnCommitted, Succeeded: true})
			checkOutcome(t, "t2", g, "t2", &TxnOutcome{Index: 5, State: TxnAborted})
			checkOutcome(t, "t3", g, "t3", &TxnOutcome{Index: 7, State: TxnCommitted})
			wantLocked(t, "put to a locked key after restart", apply1(t, g, put(9, "b", "x")), "p1", "b")
			if r := apply1(t, g, txnLog(10, TxnSpec{ID: "t2", Success: []TxnOp{opPut("c", "late")}})); !errors.Is(r.Err, ErrTxnFenced) {
				t.Fatalf("fenced transaction after restart: %v", r.Err)
			}
			if r := apply1(t, g, resolveLog(11, "p1", true, false)); r.Err != nil {
				t.Fatal(r.Err)
			}
			mustGet(t, g, "b", "f")
			mustGet(t, g, "c", "3")

			// The resolve's deletions reach bbolt too.
			mustFlush(t, s2)
			crash(s2)
			s3 := openStore(t, dir)
			defer s3.Close()
			checkLocks(t, "after the resolve and a restart", mustRange(t, s3, feedRange), []string{})
		})
	}
}

func TestTxnState_SnapshotRestore(t *testing.T) {
	src := openStore(t, t.TempDir())
	defer src.Close()
	f := mustRange(t, src, feedRange)
	logs := txnHistory()
	f.ApplyBatch(logs[:4])
	mustFlush(t, src)
	f.ApplyBatch(logs[4:]) // the rest in the overlay: Snapshot flushes it
	ids := []string{"t1", "t2", "t3"}
	want := txnStateString(t, f, ids...)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dir := t.TempDir()
	dst := openStore(t, dir)
	g := mustRange(t, dst, feedRange)
	// State the restore replaces: a lock and an outcome of its own.
	applyTxnOK(t, g, prepareLog(1, TxnPart{ID: "old", Success: []TxnOp{opPut("a", "old")}}))
	applyTxnOK(t, g, txnLog(2, TxnSpec{ID: "t-old", Success: []TxnOp{opPut("q", "old")}}))
	mustFlush(t, dst)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := txnStateString(t, g, ids...); got != want {
		t.Fatalf("after restore:\n%s\nwant:\n%s", got, want)
	}
	checkOutcome(t, "the replaced state's outcome", g, "t-old", nil)
	wantLocked(t, "put to a locked key after restore", apply1(t, g, put(9, "a", "x")), "p1", "a")
	if r := apply1(t, g, txnLog(10, TxnSpec{ID: "t1", Success: []TxnOp{opPut("c", "again")}})); r.Err != nil || r.Txn == nil || r.Txn.Outcome == nil {
		t.Fatalf("t1 again after restore: %+v", r)
	}
	mustGet(t, g, "c", "3")

	// The restore wrote the buckets: a restart finds the same.
	want = txnStateString(t, g, ids...)
	mustFlush(t, dst)
	crash(dst)
	dst2 := openStore(t, dir)
	defer dst2.Close()
	h := mustRange(t, dst2, feedRange)
	if got := txnStateString(t, h, ids...); got != want {
		t.Fatalf("after restore and restart:\n%s\nwant:\n%s", got, want)
	}
	checkOutcome(t, "the replaced state's outcome after restart", h, "t-old", nil)
}

func TestTxnState_Split(t *testing.T) {
	tests := []struct {
		name  string
		flush bool // the prepare reaches bbolt before the split (else the split's flush takes it)
	}{
		{"prepare committed before", true},
		{"prepare in the same batch", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			f := openUserRange(t, s, feedRange)
			f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "m", "1"), put(3, "x", "1"),
				txnLog(4, TxnSpec{ID: "t1", Success: []TxnOp{opPut("c", "1")}}), fenceLog(5, "t2")})
			prepare := prepareLog(6, TxnPart{ID: "p1", Reads: [][]byte{[]byte("y")}, Success: []TxnOp{opPut("b", "2"), opPut("m", "2"), opDel("x")}})
			split := splitLog(7, "m", 3)
			if tc.flush {
				applyTxnOK(t, f, prepare)
				mustFlush(t, s)
				f.ApplyBatch([]*raft.Log{split})
			} else {
				f.ApplyBatch([]*raft.Log{prepare, split})
			}
			check := func(when string, p, c *RangeFSM, next uint64) {
				t.Helper()
				checkLocks(t, when+": parent", p, []string{"b:p1 s=put=2 f=-"})
				checkLocks(t, when+": child", c, []string{"m:p1 s=put=2 f=-", "x:p1 s=del f=-", "y:p1 s=- f=-"})
				for _, r := range []*RangeFSM{p, c} {
					checkOutcome(t, when, r, "t1", &TxnOutcome{Index: 4, State: TxnCommitted, Succeeded: true})
					checkOutcome(t, when, r, "t2", &TxnOutcome{Index: 5, State: TxnAborted})
				}
				wantLocked(t, when+": child put", apply1(t, c, put(next, "x", "no")), "p1", "x")
				wantLocked(t, when+": parent put", apply1(t, p, put(next+7, "b", "no")), "p1", "b")
			}
			c, err := s.OpenRange(Descriptor{ID: 3})
			if err != nil {
				t.Fatal(err)
			}
			check("after the split", f, c, 1)

			crash(s)
			s2 := openStore(t, dir)
			defer s2.Close()
			p := openUserRange(t, s2, feedRange)
			c, err = s2.OpenRange(Descriptor{ID: 3})
			if err != nil {
				t.Fatal(err)
			}
			check("after a restart", p, c, 1) // index 1 was not flushed: the same again

			// Each range resolves its share.
			if r := apply1(t, c, resolveLog(2, "p1", true, true)); r.Err != nil || r.Deleted != 3 {
				t.Fatalf("child resolve: %+v", r)
			}
			if r := apply1(t, p, resolveLog(9, "p1", true, true)); r.Err != nil || r.Deleted != 1 {
				t.Fatalf("parent resolve: %+v", r)
			}
			mustGet(t, p, "b", "2")
			mustGet(t, c, "m", "2")
			mustMissing(t, c, "x")
			checkLocks(t, "parent after resolve", p, []string{})
			checkLocks(t, "child after resolve", c, []string{})
			// The child is a range of its own: a transaction with an id
			// it recorded is not run again.
			if r := apply1(t, c, txnLog(3, TxnSpec{ID: "t1", Success: []TxnOp{opPut("z", "again")}})); r.Err != nil || r.Txn == nil || r.Txn.Outcome == nil {
				t.Fatalf("t1 in the child: %+v", r)
			}
			mustMissing(t, c, "z")
		})
	}
}

// ---- 5. digest ----

// TestTxnState_Digest records what the digest covers of a transaction's
// state: replicas that applied the same log agree (a lock's clock is not
// hashed), and locks, outcomes and versions are hashed, since each changes
// how later commands apply.
func TestTxnState_Digest(t *testing.T) {
	digestOf := func(logs []*raft.Log) Digest {
		s := openStore(t, t.TempDir())
		defer s.Close()
		f := mustRange(t, s, feedRange)
		f.ApplyBatch(logs)
		return mustDigest(t, f)
	}
	base := []*raft.Log{put(1, "a", "1"), put(2, "b", "2")}
	with := func(extra ...*raft.Log) []*raft.Log { return append(slices.Clone(base), extra...) }
	tests := []struct {
		name string
		a, b []*raft.Log
		same bool
	}{
		{"same log, applied at different times", with(prepareLog(3, TxnPart{ID: "p", Reads: [][]byte{[]byte("a")}})), with(prepareLog(3, TxnPart{ID: "p", Reads: [][]byte{[]byte("a")}})), true},
		{"a lock or none", with(prepareLog(3, TxnPart{ID: "p", Reads: [][]byte{[]byte("a")}, Success: []TxnOp{opPut("b", "x")}})), with(markerLog(3)), false},
		{"an outcome or none", with(txnLog(3, TxnSpec{ID: "t", Success: []TxnOp{opPut("c", "3")}})), with(txnLog(3, TxnSpec{Success: []TxnOp{opPut("c", "3")}})), false},
		{"an aborted outcome or none", with(fenceLog(3, "t")), with(markerLog(3)), false},
		{"version 2 or 1", []*raft.Log{txnLog(1, TxnSpec{Success: []TxnOp{opPut("a", "0")}}), put(2, "a", "1")}, []*raft.Log{txnLog(1, TxnSpec{}), put(2, "a", "1")}, false},
		{"no versions before a transaction", []*raft.Log{put(1, "a", "0"), put(2, "a", "1")}, []*raft.Log{markerLog(1), put(2, "a", "1")}, true},
	}
	for _, tc := range tests {
		if da, db := digestOf(tc.a), digestOf(tc.b); (da == db) != tc.same {
			t.Errorf("%s: digests %+v and %+v, want same=%v", tc.name, da, db, tc.same)
		}
	}
}

// A lock whose write carries a lease keeps the range from being vouched
// for as holding none of the lease's keys (the key appears when the lock
// resolves), whichever outcome carries it; resolving it ends that.
func TestLeaseLocked(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{
		prepareLog(1, TxnPart{ID: "p1", Success: []TxnOp{{Kind: TxnPut, Key: []byte("a"), Value: []byte("v"), Lease: 7}}}),
		prepareLog(2, TxnPart{ID: "p2", Success: []TxnOp{opPut("b", "2")}, Failure: []TxnOp{{Kind: TxnPut, Key: []byte("c"), Value: []byte("f"), Lease: 9}}}),
	})
	for _, tc := range []struct {
		lease uint64
		want  bool
	}{{7, true}, {9, true}, {8, false}} {
		if got := f.LeaseLocked(tc.lease); got != tc.want {
			t.Errorf("LeaseLocked(%d) = %v, want %v", tc.lease, got, tc.want)
		}
	}
	f.ApplyBatch([]*raft.Log{resolveLog(3, "p1", true, true)})
	if f.LeaseLocked(7) {
		t.Error("lease 7 still locked after its transaction resolved")
	}
	if keys, err := f.LeaseKeys(7); err != nil || len(keys) != 1 {
		t.Errorf("lease 7's keys after the resolve = %q, %v; want [a]", keys, err)
	}
}
