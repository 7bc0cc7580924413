// Package shard is one range of the key space and the Raft group that
// replicates it: a Descriptor (which keys, which replicas) and a Shard that
// owns the range's raft.Raft and its raftstore.RangeFSM.
//
// A Shard knows how to commit a command (Propose), how to prove a read is
// linearizable (ReadIndex: note the commit index, confirm leadership with a
// quorum, wait until the state machine has applied that index), and how to
// change its own membership. It does not know about other ranges, other
// nodes' addresses or clients: forwarding and routing live in package
// replication, request validation in package api.
//
// The quorum is asked through the transport when it can ask many ranges'
// followers at once (leadershipConfirmer: the node link's questions, one
// message per peer for every range reading at that moment, which a
// follower answers from its replica's term and leader; confirm.go), and
// through raft.VerifyLeader's heartbeats when it cannot or a peer says no.
//
// A new leader may only serve read-index reads once an entry of its own term
// has committed. hashicorp/raft commits a no-op at the start of each term
// but never hands no-ops to the FSM, so the Shard applies a marker command
// of its own as soon as it becomes leader and serves linearizable reads only
// after that marker has been applied.
//
// The range's log is its view of the node's write-ahead log
// (raftstore.RaftStorage, package raftstore/wal): every range of the node
// appends to the same log and shares its fsyncs. The Shard reaches it
// through a small interface (raftLog) with what the parallel leader append
// needs, and owns two of its guards: its transport never sends followers a
// commit index past the leader's durable log, and a node hands a new
// leader's entries to Raft only once its own earlier appends are durable.
// The third, in the FSM, is wired here too (SetLogSync). The durable index
// is the range's own: a range waits only for the sync round that covers
// its own writes.
//
// Heartbeats reach hashicorp/raft's fast path (run beside its main loop)
// only when they cannot move the replica's term or state
// (fastHeartbeatSafe); a heartbeat of a later term goes through the main
// loop, since on the fast path it could make a leader write a client's
// entry under the new term (hashicorp/raft#695).
//
// Raft is given the range's log through a wrapper that counts the appends
// the log refuses (AppendFailures, AppendHealth): Raft only logs those, so
// a replica that stopped taking its leader's entries looked healthy
// everywhere else. And after Raft installs a leader's snapshot, the Shard
// restarts the Raft instance if it still counts log entries past the
// snapshot that its emptied log no longer holds (watchInstall). A
// snapshot the log already runs past, which a leader's replicator for a
// peer it removed can send after the peer was added back, is installed
// with the log kept (keepLog): emptied, the replica would forget entries
// it acknowledged.
//
// Raft starts with NoSnapshotRestoreOnStart, since the state machine is
// durable, so it takes the newest snapshot's index as applied. Every start
// of an instance (the node's, a wake, the restart after an install) first
// makes that true: it swaps in a received snapshot still staged, drops one
// whose staged data is gone (the leader sends it again), and discards
// staging nothing will restore (recoverFromSnapshot).
//
// docs/design/raft-library.md lists every behaviour of hashicorp/raft
// these guards answer, with the test that fails without each.
package shard
