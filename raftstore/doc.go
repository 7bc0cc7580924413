// Package raftstore owns everything a node keeps on disk for the ranges it
// hosts: the write-ahead log that holds every range's Raft log and stable
// store, each range's snapshots, and the durable state machine that all
// of the node's ranges share.
//
// # Layout
//
//	DATA/state.db              bbolt: one bucket per range, plus descriptors, applied indexes, sizes and the storage layout
//	DATA/wal/                  the node's write-ahead log (package wal): every range's Raft log, term and vote
//	DATA/ranges/ID/log         a fence file (writeFence): a kvd from before the WAL refuses the directory
//	DATA/ranges/ID/snapshots/  the range's Raft snapshots: references to state.db (refsnap.go)
//
// Each range sees its own view of the log (wal.RangeLog, handed out by
// OpenRaftStorage); Store opens the log with state.db and closes it last.
// DropRange removes a range's descriptor first, then drops it from the log
// (durably) and removes its directory; Open finishes a drop a crash
// interrupted.
//
// # Upgrading in place
//
// state.db records the directory's storage layout (layout* in migrate.go):
// none means the layout before the WAL, where each range had its own log
// (DATA/ranges/ID/log/, a SegmentLog) and stable store
// (DATA/ranges/ID/raft.db). Open moves every such range into the log once
// (MigrateRangeToWAL: the old files go only after the log's copy is
// durable, so a crash anywhere repeats or completes the move), then
// records the layout; a layout newer than the build is refused. The next
// change to the layout bumps the version and migrates from the one it
// finds.
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
// committing every batch pays. Timer commits cost two fsyncs per interval
// for the whole node, however many ranges it hosts. The log's fsyncs are
// the node's too: every range appends to one log, whose syncer makes
// everything written before each round durable with one fdatasync (group
// commit), so N ranges writing at once pay one fsync, not N.
//
// # Why a log of our own
//
// The log append is the one sync on the write path, so it decides write
// latency. Package wal is the node's log now; SegmentLog, the per-range
// log before it, stays for reading an old data directory's ranges during
// the upgrade. The reasons for a log of our own hold for both.
// raft-boltdb pays bbolt's two fsyncs and a B-tree page rewrite per
// batch. github.com/hashicorp/raft-wal pays one, but v0.4.0 (the only
// version the module proxy serves) cannot reopen a log whose tail was
// truncated ("sealed segment has no index block", hashicorp/raft-wal#31),
// and Raft truncates a tail whenever a deposed leader's uncommitted entries
// are overwritten; the Jepsen-style suite hit it (repro_test.go). SegmentLog
// is the small subset Raft needs: append a batch with one write and one
// fdatasync into preallocated segment files, read by index through an
// in-memory offset table, cut a prefix (after a snapshot), a suffix
// (overwritten entries) or everything (after installing a leader's
// snapshot: the log is monotonic, so Raft empties it and begins again
// after the snapshot), and on open cut a torn tail and refuse any other
// damage. A suffix cut is durable before the next append, so a crash can
// never bring back entries Raft deleted. Raft reads every entry back right
// after storing it (a follower to apply it, a leader to send it), so the
// newest small records also stay in memory: a copy instead of a pread each.
// The WAL keeps all of that (docs/design/wal.md) and adds what one log per
// range could not: one fsync for every range appending at once.
//
// # The leader's sync, in parallel
//
// hashicorp/raft stores a batch in the leader's log before it tells the
// replicators, so the leader's fsync and the followers' ran one after the
// other. With SetSyncBehind the leader's append returns once written and
// its fdatasync runs in the background while the entries travel (the Raft
// thesis, section 10.2.1). The leader then counts its own copy before it
// is durable, so three guards keep "committed" meaning "on a majority's
// disks" wherever it matters (each range's view of the log keeps its own
// synced index): RangeFSM.ApplyBatch waits for the log to be durable up to
// what it applies (SetLogSync), so no write is acknowledged or read early;
// the shard's transport never sends followers a commit index past the
// leader's durable one; and a node that appended as leader makes those
// appends durable before it answers a new leader, which would otherwise
// take them as stored. Configuration changes, no-ops and barriers are
// synced before the append returns.
//
// # Sizes
//
// Each range's key count and key-plus-value bytes are kept exact by every
// commit, split and restore, in the same transaction as the data, so split
// checks and status never walk a range's pages. Data pages are packed to
// 90% (keys often arrive in order: bulk loads, splits, snapshots).
//
// # Concurrency
//
// Raft calls ApplyBatch, Snapshot and Restore on its single FSM goroutine.
// Reads (Get, Scan) come from any goroutine and take the range's read lock
// only for the duration of one lookup. The committer goroutine takes each
// range's lock briefly to freeze its overlay, then commits without it.
// Restore writes an incoming snapshot into a staging bucket a chunk per
// transaction, holding no lock, so a 64 MiB snapshot never stalls the
// node's other ranges; one small transaction under the committer's lock
// swaps the staged bucket in (snapshot.go). A received snapshot is staged
// as it arrives and its snapshot file only refers to the staged data; a
// range's own snapshot refers to state.db, and sending one streams the
// range from a read transaction (refsnap.go), at whatever index state.db
// has reached: so a snapshot's state can be past its index, and a range
// already at or past a snapshot's state keeps its own instead of moving
// back (keepAhead). Config.SnapshotRate paces the snapshots a node
// receives, node-wide (snappace.go).
//
// # Change feed and leases
//
// Each user range also keeps a change feed (events.go): an event per
// committed write, recorded in the overlay at apply and committed to the
// range's event bucket in the same transaction as the data, trimmed to a
// byte and age budget above a recorded floor. Keys may be attached to a
// lease (the stored revision's top bit says a lease id follows); a lease
// index per range, kept by the committer, lets OpLeaseRevoke find them.
//
//	DATA/state.db  buckets e<id> (events by index), l<id> (lease id+key)
package raftstore
