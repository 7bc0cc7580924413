// Package wal is a node's write-ahead log: one log shared by every Raft
// range the node hosts, so that N ranges appending at once pay one
// fdatasync, not N (issue 13). Each range sees its own view of it
// (RangeLog), which is the range's raft.LogStore, raft.StableStore and
// raft.MonotonicLogStore, with the durability controls the shard needs
// for the parallel leader append. docs/design/wal.md tells the story at
// more length, with measurements.
//
// # Layout
//
//	DATA/wal/<sequence, 20 digits>.wal   segments, oldest first; the newest is active
//	DATA/wal/floor                       the oldest live segment's sequence number
//
// # Format
//
// A segment begins with a 24-byte header (magic, format version,
// sequence number, CRC-32C) and holds records: payload length and the
// payload's CRC-32C, then a payload that begins with a format version
// byte, a kind and the range ID (record.go has the details). Every
// operation of every range is one record: a batch of appended entries,
// a suffix or prefix cut, clearing the log, a stable value (term, vote),
// dropping the range, and the collector's copies. The checksum is per
// record because a crash tears the log at a record, and replay must tell
// the torn one from the whole ones before it. The version byte is per
// record, not just per segment, so that a newer build may add a record
// kind or field within a segment an older one wrote, and an older build
// that meets it refuses it (ErrVersion) rather than misreading it.
//
// # Writes and group commit
//
// A range encodes its record on its own goroutine and appends it to the
// active segment's tail in memory under the log's write lock; its view is
// updated at once (readable before durable: a read of an entry not yet in
// the file copies it out of the tail). A single syncer goroutine makes
// durable, with one write of the tail and one fdatasync, everything
// appended before its round began; what is appended meanwhile waits for
// the next round. A lone
// writer (nobody else waiting, no round running) makes the round on its
// own goroutine instead, sparing two hand-offs. An append
// returns once its round is done. With many writers the rounds would
// settle into two cohorts taking turns, each half of them; the syncer
// therefore waits, at most a quarter of a sync, for the writers the last
// round released (gather), and a lone writer never waits. Segments are
// preallocated, so an append rarely changes metadata the sync must
// journal; a full segment is synced whole and sealed before the next one
// takes a write.
//
// What is durable when a call returns: an append (unless the range syncs
// behind), a cut, a stable value, a drop. A cut must be: a crash must not
// bring back entries Raft deleted. A write or sync that fails stops the
// process (stopOnSyncFailure): what the page cache then holds is
// unknown, and Linux may report the next fsync as a success.
//
// # The leader's sync, in parallel
//
// SetSyncBehind lets a leader's appends of commands return once written,
// their sync following in the next round, so that the leader's fsync
// overlaps the followers' (the Raft thesis, section 10.2.1). The view
// keeps the range's synced index (SyncedIndex, WaitSynced,
// WaitWrittenSynced), and the shard's three guards keep "committed"
// meaning "on a majority's disks": the state machine applies only what
// the leader has durable, the commit index sent to followers never
// passes it, and a former leader makes its appends durable before it
// answers a new one. Entries of other types are always synced first.
//
// # Reads and memory
//
// A range's index maps entries to records, a block per record (not per
// entry), packed as uvarints into chunks of consecutive records in one
// segment: a few bytes a record. That matters for a node with a thousand
// sleeping ranges, each keeping up to TrailingLogs entries often written
// one per batch; once the collector has copied such a range its blocks
// hold hundreds of entries each. Raft reads every entry back right after
// storing it, so the newest small entries also stay in one cache for the
// node, bounded in bytes (entryCache); a sleeping range has nothing left
// in it.
//
// # Freeing space
//
// Segments are freed oldest first. Since every range writes into the
// same segments, one range that wrote a few entries long ago and slept
// since would keep every segment from being freed; the collector instead
// copies what is still live in the oldest segments (entries, stable
// values) to the head of the log, then frees them, as TiKV's raft-engine
// does. It copies only when the live bytes are less than half of what it
// frees (planCollection), which bounds its extra writes at one byte per
// byte freed. Cuts and drops are never copied: they only hide older
// records, and the records they hide go first. Before a segment is
// removed the floor file records that it is gone, because removals may
// reach the disk in any order, and a segment whose cuts hide records in
// an older one must not disappear while the older one survives.
//
// # Replay
//
// Open reads the segments from the floor up, oldest first, and applies
// every record to its range. Only the newest segment may end in a torn
// record: replay stops there and zeroes the rest of the file (a later
// append must never leave a stale record behind it). A record that does
// not check out anywhere else, a segment missing in the middle, or a
// record that decodes wrong despite its checksum is damage no crash
// explains: Open fails with ErrCorrupt. Because freed segments take
// history with them, replay may see only part of a range's operations:
// its state at any point is a subset of the range's log then, copies
// arrive as "these entries are here now" (kindRewrite) and may fill in
// entries below ones already seen, and only at the end must every range's
// entries follow each other.
//
// # Concurrency
//
// Lock order: the collector's lock, the views map's, a range's write
// lock (its writers: Raft's goroutines and the collector), the range's
// read lock, the round lock (one sync round at a time), the log's write
// lock, the syncer's lock. Readers take a
// range's read lock only for one lookup and never wait on a sync.
//
// # Upgrading in place
//
// raftstore.MigrateRangeToWAL moves a range's old SegmentLog and raft.db
// into the log once, through Import, which replaces the range's content
// and makes it durable before the old files go.
package wal
