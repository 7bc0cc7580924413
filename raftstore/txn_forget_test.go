package raftstore

import (
	"encoding/binary"
	"testing"

	"github.com/hashicorp/raft"
)

// OpTxnForget drops exactly the outcomes recorded before its index, on
// every replica alike, and survives a restart.
func TestOpTxnForget_DropsOutcomesBeforeItsIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{
		txnLog(1, TxnSpec{ID: "old", Success: []TxnOp{opPut("a", "1")}}),
		fenceLog(2, "fenced"),
		txnLog(3, TxnSpec{ID: "new", Success: []TxnOp{opPut("b", "2")}}),
		cmdLog(4, Command{Op: OpTxnForget, Value: binary.BigEndian.AppendUint64(nil, 3)}),
	})
	for id, want := range map[string]bool{"old": false, "fenced": false, "new": true} {
		if _, ok := f.Outcome(id); ok != want {
			t.Errorf("outcome of %s kept = %v, want %v", id, ok, want)
		}
	}
	if got := f.OldestOutcome(); got != 3 {
		t.Errorf("oldest outcome at %d, want 3", got)
	}
	mustFlush(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	f = mustRange(t, s, feedRange)
	if _, ok := f.Outcome("old"); ok {
		t.Error("a forgotten outcome came back after a restart")
	}
	if _, ok := f.Outcome("new"); !ok {
		t.Error("a kept outcome was lost in a restart")
	}
}
