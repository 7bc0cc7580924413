package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// RaftStorage is what one range's Raft group keeps on disk besides the
// state machine: its log and stable store (one raft-wal) and its snapshots.
type RaftStorage struct {
	WAL       *wal.WAL
	Snapshots raft.SnapshotStore
	dir       string
}

// Log returns the Raft log store.
func (r *RaftStorage) Log() raft.LogStore { return r.WAL }

// Stable returns the Raft stable store (term, vote).
func (r *RaftStorage) Stable() raft.StableStore { return r.WAL }

// Close closes the log.
func (r *RaftStorage) Close() error { return r.WAL.Close() }

// RangeDir is where range id keeps its log and snapshots.
func (s *Store) RangeDir(id uint64) string {
	return filepath.Join(s.cfg.Dir, "ranges", strconv.FormatUint(id, 10))
}

// OpenRaftStorage opens (creating) range id's log and snapshot store.
func (s *Store) OpenRaftStorage(id uint64, logger hclog.Logger) (*RaftStorage, error) {
	dir := s.RangeDir(id)
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	w, err := wal.Open(walDir, wal.WithLogger(logger.Named("wal")))
	if err != nil {
		return nil, fmt.Errorf("raftstore: open log of range %d: %w", id, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &RaftStorage{WAL: w, Snapshots: snaps, dir: dir}, nil
}
