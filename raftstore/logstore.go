package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// RaftStorage is what one range's Raft group keeps on disk besides the
// state machine: its view of the node's write-ahead log, which holds its
// Raft log and its stable store (term and vote), and its own snapshots.
type RaftStorage struct {
	log       *wal.RangeLog
	Snapshots raft.SnapshotStore
}

// Log returns the range's view of the node's log: its raft.LogStore, with
// the durability controls of the parallel leader append (SetSyncBehind,
// SyncedIndex, WaitSynced, WaitWrittenSynced).
func (r *RaftStorage) Log() *wal.RangeLog { return r.log }

// Stable returns the Raft stable store (term, vote): the same view.
func (r *RaftStorage) Stable() raft.StableStore { return r.log }

// Close detaches the range's Raft instance from the log. The log itself
// is the node's and closes with the Store; a replica that leaves the node
// leaves the log through Store.DropRange.
func (r *RaftStorage) Close() error {
	r.log.SetSyncBehind(nil)
	return nil
}

// DropSnapshot removes snapshot id: one Open refused with
// ErrSnapshotBehind, whose staged data a restart lost, before Raft starts
// on it. Raft never answered the leader for it, and sends it again.
func (r *RaftStorage) DropSnapshot(id string) error {
	s, ok := r.Snapshots.(*refStore)
	if !ok {
		return fmt.Errorf("raftstore: drop snapshot %q: not one of the range's", id)
	}
	return s.drop(id)
}

// RangeDir is where range id keeps its snapshots.
func (s *Store) RangeDir(id uint64) string {
	return filepath.Join(s.cfg.Dir, "ranges", strconv.FormatUint(id, 10))
}

// OpenRaftStorage opens range id's Raft storage: its view of the node's
// log and its snapshot store (creating its directory).
func (s *Store) OpenRaftStorage(id uint64, logger hclog.Logger) (*RaftStorage, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	dir := s.RangeDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	// Before Raft writes anything for the range: an older kvd must
	// refuse this directory rather than open the range empty.
	if err := writeFence(dir); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	if err := cleanSnapshotDir(filepath.Join(dir, "snapshots")); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &RaftStorage{log: s.wal.Range(id), Snapshots: &refStore{FileSnapshotStore: snaps, dir: filepath.Join(dir, "snapshots"), refs: rangeRef{store: s, id: id}, lim: s.snapPace, flow: &s.snapFlow, stop: s.snapStop}}, nil
}
