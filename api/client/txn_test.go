package client

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func putOp(k, v string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

// transfer is an RMW body moving 10 from a to b; calls counts its runs
// and before, when set, runs first (a concurrent writer).
type transfer struct {
	calls  int
	seen   []string
	before func(call int)
}

func (tr *transfer) fn(reads map[string]TxnRead) ([]*kvpb.TxnOp, error) {
	tr.calls++
	if tr.before != nil {
		tr.before(tr.calls)
	}
	a, _ := strconv.Atoi(string(reads["a"].Value))
	b, _ := strconv.Atoi(string(reads["b"].Value))
	tr.seen = append(tr.seen, strconv.Itoa(a)+"/"+strconv.Itoa(b))
	return []*kvpb.TxnOp{putOp("a", strconv.Itoa(a-10)), putOp("b", strconv.Itoa(b+10))}, nil
}

func TestRMW(t *testing.T) {
	conflict := rpctypes.Error(codes.Aborted, rpctypes.ReasonTxnConflict, "locked by t9", nil)
	tests := []struct {
		name   string
		script func(srv *clienttest.Server)
		// writer, when set, writes a behind RMW's back before fn's
		// given calls.
		writer    map[int]string
		opts      []RMWOption
		wantErr   func(error) bool
		wantA     string
		wantB     string
		wantFn    int
		wantTxn   int
		wantAsk   int
		wantReads int // Get calls
		wantSeen  string
	}{
		{name: "commits at once",
			wantA: "90", wantB: "10", wantFn: 1, wantTxn: 1, wantReads: 2, wantSeen: "[100/0]"},
		{name: "a failed compare retries on the values the failed transaction read",
			writer: map[int]string{1: "200"},
			wantA:  "190", wantB: "10", wantFn: 2, wantTxn: 2, wantReads: 2, wantSeen: "[100/0 200/0]"},
		{name: "TXN_CONFLICT retries with fresh reads",
			script: func(srv *clienttest.Server) { srv.Fail(clienttest.MethodTxn, 1, conflict) },
			wantA:  "90", wantB: "10", wantFn: 2, wantTxn: 2, wantReads: 4, wantSeen: "[100/0 100/0]"},
		{name: "an indeterminate outcome that committed is not retried",
			script: func(srv *clienttest.Server) { srv.Fail(clienttest.MethodTxnApplied, 1, clienttest.Indeterminate()) },
			wantA:  "90", wantB: "10", wantFn: 1, wantTxn: 1, wantAsk: 1, wantReads: 2, wantSeen: "[100/0]"},
		{name: "an indeterminate outcome aborted by the status question is retried once",
			script: func(srv *clienttest.Server) { srv.Fail(clienttest.MethodTxn, 1, clienttest.Indeterminate()) },
			wantA:  "90", wantB: "10", wantFn: 2, wantTxn: 2, wantAsk: 1, wantReads: 4, wantSeen: "[100/0 100/0]"},
		{name: "an outcome that cannot be learnt is indeterminate and names the id",
			script: func(srv *clienttest.Server) {
				srv.Fail(clienttest.MethodTxnApplied, 1, clienttest.Indeterminate())
				srv.Fail(clienttest.MethodTxnStatus, statusAsks, clienttest.Indeterminate())
			},
			wantErr: func(err error) bool {
				return IsIndeterminate(err) && strings.Contains(err.Error(), "rmw: transaction c-")
			},
			wantA: "90", wantB: "10", wantFn: 1, wantTxn: 1, wantAsk: statusAsks, wantReads: 2, wantSeen: "[100/0]"},
		{name: "reads that keep changing exhaust the attempts",
			writer:  map[int]string{1: "101", 2: "102", 3: "103"},
			opts:    []RMWOption{WithRMWAttempts(3)},
			wantErr: func(err error) bool { return errors.Is(err, ErrRMWExhausted) && !IsIndeterminate(err) },
			wantA:   "103", wantB: "", wantFn: 3, wantTxn: 3, wantReads: 2, wantSeen: "[100/0 101/0 102/0]"},
		{name: "a refused transaction is not retried",
			script: func(srv *clienttest.Server) {
				srv.Fail(clienttest.MethodTxn, 1, rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, "no", nil))
			},
			wantErr: IsInvalid,
			wantA:   "100", wantB: "", wantFn: 1, wantTxn: 1, wantReads: 2, wantSeen: "[100/0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			c := newTestClient(t, Config{Endpoints: []string{srv.Addr}, DisableRouting: true})
			srv.Store.Put([]byte("a"), []byte("100"))
			if tc.script != nil {
				tc.script(srv)
			}
			tr := &transfer{before: func(call int) {
				if v, ok := tc.writer[call]; ok {
					srv.Store.Put([]byte("a"), []byte(v))
				}
			}}
			resp, err := c.RMW(testCtx(t), []string{"a", "b", "a"}, tr.fn, tc.opts...)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("RMW: %v", err)
			case tc.wantErr != nil && !tc.wantErr(err):
				t.Fatalf("RMW: error %v is not the one expected", err)
			case tc.wantErr == nil && !resp.GetSucceeded():
				t.Fatalf("RMW answered %v; want succeeded", resp)
			}
			a, _ := srv.Store.Value([]byte("a"))
			b, _ := srv.Store.Value([]byte("b"))
			if string(a) != tc.wantA || string(b) != tc.wantB {
				t.Errorf("a=%q b=%q; want a=%q b=%q", a, b, tc.wantA, tc.wantB)
			}
			got := [...]int{tr.calls, srv.Calls(clienttest.MethodTxn), srv.Calls(clienttest.MethodTxnStatus), srv.Calls(clienttest.MethodGet)}
			if want := [...]int{tc.wantFn, tc.wantTxn, tc.wantAsk, tc.wantReads}; got != want {
				t.Errorf("fn, Txn, TxnStatus, Get calls = %v; want %v", got, want)
			}
			if seen := "[" + strings.Join(tr.seen, " ") + "]"; seen != tc.wantSeen {
				t.Errorf("fn saw %s; want %s", seen, tc.wantSeen)
			}
		})
	}
}

// TestRMW_ComparesEveryRead: the commit holds only if each key read is
// where it was read (range and revision), or still missing.
func TestRMW_ComparesEveryRead(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}, DisableRouting: true})
	rev := srv.Store.Put([]byte("a"), []byte("1"))
	req := rmwRequest([]string{"a", "b"}, map[string]TxnRead{"a": {Exists: true, RangeID: 1, Revision: rev}, "b": {}}, []*kvpb.TxnOp{putOp("b", "2")})
	want := []string{"a REVISION EQUAL 1:" + strconv.FormatUint(rev, 10), "b EXISTS EQUAL false"}
	for i, cmp := range req.GetCompares() {
		got := string(cmp.GetKey()) + " " + strings.TrimPrefix(cmp.GetTarget().String(), "TARGET_") + " " + strings.TrimPrefix(cmp.GetResult().String(), "RESULT_") + " "
		if cmp.GetTarget() == kvpb.Compare_TARGET_REVISION {
			got += strconv.FormatUint(cmp.GetRangeId(), 10) + ":" + strconv.FormatUint(cmp.GetIndex(), 10)
		} else {
			got += strconv.FormatBool(cmp.GetExists())
		}
		if i >= len(want) || got != want[i] {
			t.Errorf("compare %d: %s; want %v", i, got, want)
		}
	}
	if len(req.GetFailure()) != 2 || req.GetId() == "" {
		t.Errorf("request %v: want a get of each key on failure and an id", req)
	}
	resp, err := c.Txn(testCtx(t), req)
	if err != nil || !resp.GetSucceeded() {
		t.Fatalf("Txn: %v, %v; want it to commit", resp, err)
	}
	srv.Store.Put([]byte("b"), []byte("3"))
	req.Id = NewTxnID()
	if resp, err := c.Txn(testCtx(t), req); err != nil || resp.GetSucceeded() {
		t.Fatalf("Txn after b was written: %v, %v; want its compares to fail", resp, err)
	}
}

// TestTxn_StatusAndConflict: Txn is not retried on TXN_CONFLICT (the
// caller decides), and TxnStatus tells a committed id from an unknown one,
// which abort_if_pending settles as ABORTED.
func TestTxn_StatusAndConflict(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}, DisableRouting: true})
	ctx := testCtx(t)
	srv.Fail(clienttest.MethodTxn, 1, rpctypes.Error(codes.Aborted, rpctypes.ReasonTxnConflict, "locked", nil))
	req := &kvpb.TxnRequest{Id: NewTxnID(), Success: []*kvpb.TxnOp{putOp("k", "v")}}
	if _, err := c.Txn(ctx, req); !IsTxnConflict(err) || IsIndeterminate(err) {
		t.Fatalf("Txn: %v; want TXN_CONFLICT, not indeterminate", err)
	}
	if n := srv.Calls(clienttest.MethodTxn); n != 1 {
		t.Errorf("Txn was called %d times; want 1", n)
	}
	if _, err := c.Txn(ctx, req); err != nil {
		t.Fatalf("Txn again: %v", err)
	}
	tests := []struct {
		id    string
		abort bool
		want  kvpb.TxnState
	}{
		{req.Id, true, kvpb.TxnState_TXN_STATE_COMMITTED},
		{"other", false, kvpb.TxnState_TXN_STATE_PENDING},
		{"other", true, kvpb.TxnState_TXN_STATE_ABORTED},
		{"other", false, kvpb.TxnState_TXN_STATE_ABORTED},
	}
	for _, tc := range tests {
		st, err := c.TxnStatus(ctx, tc.id, []byte("k"), tc.abort)
		if err != nil || st.GetState() != tc.want {
			t.Errorf("TxnStatus(%s, abort=%v) = %v, %v; want %s", tc.id, tc.abort, st, err, TxnStateName(tc.want))
		}
	}
}

func TestRMW_FnErrorEndsIt(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}, DisableRouting: true})
	boom := errors.New("insufficient funds")
	_, err := c.RMW(context.Background(), []string{"a"}, func(map[string]TxnRead) ([]*kvpb.TxnOp, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("RMW: %v; want fn's error", err)
	}
	if n := srv.Calls(clienttest.MethodTxn); n != 0 {
		t.Errorf("Txn was called %d times after fn failed", n)
	}
}
