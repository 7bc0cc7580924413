package shard

import "errors"

var (
	// ErrNotLeader is returned when this replica is not the range's leader.
	// The request was not applied; it may be retried on the leader.
	ErrNotLeader = errors.New("shard: not the leader")

	// ErrIndeterminate is returned when a proposed write was handed to Raft
	// but its fate is unknown: leadership was lost, the node shut down, or
	// the caller's deadline passed before the entry committed.
	ErrIndeterminate = errors.New("shard: write outcome unknown")

	// ErrShutdown is returned once the shard has been shut down, for
	// requests that were never handed to Raft.
	ErrShutdown = errors.New("shard: shut down")

	// ErrCompareFailed is a CompareAndSwap whose comparison did not hold.
	ErrCompareFailed = errors.New("shard: compare failed")
)
