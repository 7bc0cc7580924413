package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// RaftStorage is what one range's Raft group keeps on disk besides the
// state machine: its log and stable store (one raft-wal) and its snapshots.
type RaftStorage struct {
	WAL       *wal.WAL
	Snapshots raft.SnapshotStore
	dir       string
	// meta is raft-wal's metadata database, opened by us because
	// WAL.Close leaves it open (and its file lock held).
	meta *metadb.BoltMetaDB
}

// Log returns the Raft log store.
func (r *RaftStorage) Log() raft.LogStore { return r.WAL }

// Stable returns the Raft stable store (term, vote).
func (r *RaftStorage) Stable() raft.StableStore { return r.WAL }

// Close closes the log and its metadata database.
func (r *RaftStorage) Close() error {
	err := r.WAL.Close()
	if merr := r.meta.Close(); err == nil {
		err = merr
	}
	return err
}

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
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithLogger(logger.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("raftstore: open log of range %d: %w", id, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		w.Close()
		meta.Close()
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &RaftStorage{WAL: w, Snapshots: snaps, dir: dir, meta: meta}, nil
}
