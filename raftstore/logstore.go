package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// RaftStorage is what one range's Raft group keeps on disk besides the
// state machine: its log and stable store (one bbolt file) and its
// snapshots.
type RaftStorage struct {
	store     *raftboltdb.BoltStore
	Snapshots raft.SnapshotStore
	dir       string
}

// Log returns the Raft log store.
func (r *RaftStorage) Log() raft.LogStore { return r.store }

// Stable returns the Raft stable store (term, vote).
func (r *RaftStorage) Stable() raft.StableStore { return r.store }

// Close closes the log.
func (r *RaftStorage) Close() error { return r.store.Close() }

// RangeDir is where range id keeps its log and snapshots.
func (s *Store) RangeDir(id uint64) string {
	return filepath.Join(s.cfg.Dir, "ranges", strconv.FormatUint(id, 10))
}

// OpenRaftStorage opens (creating) range id's log and snapshot store.
func (s *Store) OpenRaftStorage(id uint64, logger hclog.Logger) (*RaftStorage, error) {
	dir := s.RangeDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(dir, "raft.db"),
		BoltOptions: &bolt.Options{
			Timeout:        2 * time.Second,
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: open log of range %d: %w", id, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &RaftStorage{store: store, Snapshots: snaps, dir: dir}, nil
}
