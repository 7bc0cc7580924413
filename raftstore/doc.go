// Package raftstore owns everything a node keeps on disk for the ranges it
// hosts: each range's Raft log and stable store, its snapshots, and the
// durable state machine that all of the node's ranges share.
//
// # Layout
//
//	DATA/state.db            bbolt: one bucket per range, plus applied indexes
//	DATA/ranges/ID/wal/      the range's Raft log + stable store (raft-wal)
//	DATA/ranges/ID/snapshots the range's Raft snapshots (file store)
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
// That leaves one fsync on the write path (the log append, shared by every
// entry in a Raft batch), instead of the log fsync plus bbolt's two
// (data pages, then meta page) that a state machine committing every batch
// pays. Timer commits cost two fsyncs per interval for the whole node,
// however many ranges it hosts.
//
// # Why raft-wal for the log
//
// github.com/hashicorp/raft-wal appends to pre-allocated segment files with
// one fsync per batch, while a bbolt-based log (raft-boltdb) pays bbolt's two
// fsyncs plus page copy-on-write per batch. BenchmarkLogStoreAppend in this
// package measures both on the machine at hand; the README's Performance
// section records the figures.
//
// # Concurrency
//
// Raft calls ApplyBatch, Snapshot and Restore on its single FSM goroutine.
// Reads (Get, Scan) come from any goroutine and take the range's read lock
// only for the duration of one lookup. The committer goroutine takes each
// range's lock briefly to freeze its overlay, then commits without it.
package raftstore
