package raftstore

import (
	"errors"
	"fmt"
)

// Transaction commands (see txn.go's applyTxnLocked).
const (
	// OpTxn runs a whole transaction whose keys are all in this range:
	// compares, then the success or failure operations, at one index.
	OpTxn Op = iota + 40
	// OpTxnPrepare locks a cross-range transaction's keys in this range,
	// evaluating its compares and reads here (two-phase commit's first
	// phase).
	OpTxnPrepare
	// OpTxnResolve applies (commit) or drops (abort) a transaction's
	// locks in this range.
	OpTxnResolve
	// OpTxnFence makes a single-range transaction's outcome final: one
	// that has not applied never will.
	OpTxnFence
)

// LockedError is the Result.Err of a write to a key a transaction holds.
type LockedError struct {
	Txn string
	Key []byte
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("raftstore: key %q is held by transaction %s", e.Key, e.Txn)
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Unwrap() error { return ErrLocked }

// ErrLocked: a key is held by a transaction.
var ErrLocked = errors.New("raftstore: key locked by a transaction")

// Lock is a transaction's hold on one key of the range.
type Lock struct {
	Txn string
}

func (f *RangeFSM) applyTxnLocked(cmd *Command, index uint64, at int64) *Result {
	return &Result{Revision: index, Err: fmt.Errorf("%w: transactions not built yet", ErrBadCommand)}
}
