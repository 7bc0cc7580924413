package raftstore

import (
	"errors"
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
// state machine: its log (a SegmentLog), its stable store (term and vote,
// in a small bbolt file) and its snapshots.
type RaftStorage struct {
	log       *SegmentLog
	stable    *raftboltdb.BoltStore
	Snapshots raft.SnapshotStore
	dir       string
}

// Log returns the Raft log store.
func (r *RaftStorage) Log() raft.LogStore { return r.log }

// SegmentLog returns the log itself, for what raft.LogStore doesn't say:
// syncing behind and waiting for durability.
func (r *RaftStorage) SegmentLog() *SegmentLog { return r.log }

// Stable returns the Raft stable store (term, vote).
func (r *RaftStorage) Stable() raft.StableStore { return r.stable }

// Close closes the log and the stable store.
func (r *RaftStorage) Close() error {
	return errors.Join(r.log.Close(), r.stable.Close())
}

// RangeDir is where range id keeps its log and snapshots.
func (s *Store) RangeDir(id uint64) string {
	return filepath.Join(s.cfg.Dir, "ranges", strconv.FormatUint(id, 10))
}

// OpenRaftStorage opens (creating) range id's log, stable store and
// snapshot store.
func (s *Store) OpenRaftStorage(id uint64, logger hclog.Logger) (*RaftStorage, error) {
	dir := s.RangeDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	stable, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(dir, "raft.db"),
		BoltOptions: &bolt.Options{
			Timeout:        2 * time.Second,
			NoFreelistSync: true,
			FreelistType:   bolt.FreelistMapType,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: open stable store of range %d: %w", id, err)
	}
	log, err := OpenSegmentLog(filepath.Join(dir, "log"))
	if err == nil {
		err = moveBoltLog(stable, log)
	}
	if err != nil {
		if log != nil {
			log.Close()
		}
		stable.Close()
		return nil, fmt.Errorf("raftstore: open log of range %d: %w", id, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		log.Close()
		stable.Close()
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &RaftStorage{log: log, stable: stable, Snapshots: snaps, dir: dir}, nil
}

// moveBoltLog moves the entries of a log kept in raft.db (before the
// segment log, every range's log lived there) into the segment log, so
// that a node upgraded in place keeps its log. The entries are durable in
// the segment log before they leave raft.db, so a crash midway repeats
// the move.
func moveBoltLog(from *raftboltdb.BoltStore, to *SegmentLog) error {
	first, err := from.FirstIndex()
	if err != nil {
		return err
	}
	last, err := from.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	// raft.db stays the source of truth until the move completes: entries
	// already in the segment log are from a move a crash interrupted.
	if err := to.DeleteRange(0, ^uint64(0)); err != nil {
		return err
	}
	const batch = 512
	for lo := first; lo <= last; lo += batch {
		var logs []*raft.Log
		for i := lo; i <= min(lo+batch-1, last); i++ {
			e := new(raft.Log)
			if err := from.GetLog(i, e); err != nil {
				return fmt.Errorf("read raft.db entry %d: %w", i, err)
			}
			logs = append(logs, e)
		}
		if err := to.StoreLogs(logs); err != nil {
			return err
		}
	}
	return from.DeleteRange(first, last)
}
