// Package raftstore owns everything a node keeps on disk for the ranges it
// hosts: each range's Raft log and stable store, its snapshots, and the
// durable state machine that all of the node's ranges share.
//
// # Layout
//
//	DATA/state.db              bbolt: one bucket per range, plus descriptors and applied indexes
//	DATA/ranges/ID/raft.db     the range's Raft log + stable store (raft-boltdb, bbolt)
//	DATA/ranges/ID/snapshots/  the range's Raft snapshots (file store)
//
// # Where the fsyncs go
//
// A write is acknowledged once a quorum has appended it to the Raft log, and
// every log append is fsynced; that is what makes it durable. The state
// machine therefore does not need to fsync on every apply: RangeFSM applies
// committed entries to an in-memory overlay (an ordered B-tree of the keys
// written since the last commit), and Store commits the overlays of every
// range on the node in one bbolt transaction on a short timer. Reads see the
// overlay first, then bbolt, so an applied write is visible at once. Each
// range records its applied index in the same bbolt transaction as its data,
// so after a crash the Raft library re-delivers the log entries past the last
// durable applied index (hashicorp/raft's NoSnapshotRestoreOnStart) and the
// FSM skips the ones it already has. Before Raft may truncate its log, the FSM
// snapshot forces a commit, so no entry is dropped from the log before the
// state it produced is on disk.
//
// That leaves the log commit as the only disk sync on the write path
// (shared by every entry in a Raft batch), instead of the log commit plus
// bbolt's two fsyncs (data pages, then meta page) that a state machine
// committing every batch pays. Timer commits cost two fsyncs per interval for the whole node,
// however many ranges it hosts.
//
// # Why raft-boltdb for the log, not raft-wal
//
// github.com/hashicorp/raft-wal appends to segment files with one fsync per
// batch and measured faster here, but v0.4.0 (the only version the module
// proxy serves) cannot reopen a log whose tail was truncated: truncateTail
// marks the old tail segment sealed without writing its index block, and
// the next start fails with "sealed segment has no index block". Raft
// truncates a tail whenever a deposed leader's uncommitted entries are
// overwritten, so the Jepsen-style suite hit it after a partition and a
// kill (jepsen-style-tests/repro_test.go). raft-boltdb pays bbolt's two
// fsyncs per append batch instead of one, but survives every restart;
// correctness first. The state machine still avoids fsyncs on the write
// path, so a write costs one log commit per Raft batch.
//
// # Concurrency
//
// Raft calls ApplyBatch, Snapshot and Restore on its single FSM goroutine.
// Reads (Get, Scan) come from any goroutine and take the range's read lock
// only for the duration of one lookup. The committer goroutine takes each
// range's lock briefly to freeze its overlay, then commits without it.
package raftstore
