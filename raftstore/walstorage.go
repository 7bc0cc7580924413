package raftstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// WALStorage is what one range keeps on disk when the node's ranges
// share one write-ahead log (raftstore/wal, issue 13): the range's view
// of that log, as its Raft log and stable store, and its own snapshots.
// It stands where RaftStorage stands today; the node does not use it yet.
type WALStorage struct {
	log       *wal.RangeLog
	Snapshots raft.SnapshotStore
	dir       string
}

// Log returns the Raft log store.
func (r *WALStorage) Log() raft.LogStore { return r.log }

// Stable returns the Raft stable store (term, vote).
func (r *WALStorage) Stable() raft.StableStore { return r.log }

// RangeLog returns the range's view of the log, for what raft.LogStore
// doesn't say: syncing behind and waiting for durability.
func (r *WALStorage) RangeLog() *wal.RangeLog { return r.log }

// Close does nothing: the log is the node's, closed with it
// (wal.WAL.DropRange removes a range that leaves the node).
func (r *WALStorage) Close() error { return nil }

// OpenWALStorage opens range id's storage on the node's log w: first
// moving the range's own log and raft.db into w if the node was upgraded
// in place and still has them, then opening its snapshot store.
func (s *Store) OpenWALStorage(w *wal.WAL, id uint64, logger hclog.Logger) (*WALStorage, error) {
	dir := s.RangeDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: range %d: %w", id, err)
	}
	if _, err := MigrateRangeToWAL(w, id, dir); err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raftstore: open snapshots of range %d: %w", id, err)
	}
	return &WALStorage{log: w.Range(id), Snapshots: snaps, dir: dir}, nil
}

// walMigrated marks, in a range's directory, that the range's old log and
// stable store are in the WAL and only their removal is left to finish.
const walMigrated = "wal-migrated"

// migrateBatch is how many entries the migration moves at a time.
const migrateBatch = 512

// MigrateRangeToWAL moves range id's old per-range storage in rangeDir
// into w, once: its log (rangeDir/log, a SegmentLog; or entries still in
// raft.db, from before the segment log) and its stable store (every key
// in raft.db: CurrentTerm, LastVoteTerm, LastVoteCand). It reports whether
// there was anything to move.
//
// A crash anywhere repeats or completes it: the old files are the source
// of truth until the WAL's copy is durable (wal.WAL.Import replaces
// whatever an interrupted migration left there); then a marker file says
// the copy is complete, and only after it is durable do the old files
// go. With the marker present, opening again only finishes the removal.
func MigrateRangeToWAL(w *wal.WAL, id uint64, rangeDir string) (bool, error) {
	logDir := filepath.Join(rangeDir, "log")
	dbPath := filepath.Join(rangeDir, "raft.db")
	marker := filepath.Join(rangeDir, walMigrated)
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("raftstore: move range %d into the WAL: %w", id, err)
	}
	done, err := exists(marker)
	if err != nil {
		return fail(err)
	}
	if !done {
		hasLog, err := exists(logDir)
		if err != nil {
			return fail(err)
		}
		hasDB, err := exists(dbPath)
		if err != nil {
			return fail(err)
		}
		if !hasLog && !hasDB {
			return false, nil
		}
		if err := importOldStorage(w, id, logDir, dbPath, hasLog, hasDB); err != nil {
			return fail(err)
		}
		if err := writeMarker(marker, rangeDir); err != nil {
			return fail(err)
		}
	}
	if err := os.RemoveAll(logDir); err != nil {
		return fail(err)
	}
	if err := os.Remove(dbPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail(err)
	}
	if err := syncDir(rangeDir); err != nil {
		return fail(err)
	}
	if err := os.Remove(marker); err != nil {
		return fail(err)
	}
	if err := syncDir(rangeDir); err != nil {
		return fail(err)
	}
	return true, nil
}

// importOldStorage copies the old log and stable store into w, durably.
func importOldStorage(w *wal.WAL, id uint64, logDir, dbPath string, hasLog, hasDB bool) error {
	stable := map[string][]byte{}
	var boltFirst, boltLast uint64
	if hasDB {
		var err error
		if stable, err = readStableKeys(dbPath); err != nil {
			return err
		}
		// raft.db is read-only here: opening it must not create it anew.
		db, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second}})
		if err != nil {
			return fmt.Errorf("open %s: %w", dbPath, err)
		}
		defer db.Close()
		if boltFirst, err = db.FirstIndex(); err == nil {
			boltLast, err = db.LastIndex()
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", dbPath, err)
		}
		if boltLast > 0 {
			// A log still in raft.db is the older one: moveBoltLog keeps
			// it there until its copy in the segment log is complete.
			return w.Import(id, stable, batches(boltFirst, boltLast, db))
		}
	}
	if !hasLog {
		return w.Import(id, stable, batches(0, 0, nil))
	}
	seg, err := OpenSegmentLog(logDir)
	if err != nil {
		return err
	}
	defer seg.Close()
	first, _ := seg.FirstIndex()
	last, _ := seg.LastIndex()
	return w.Import(id, stable, batches(first, last, seg))
}

// batches returns an Import source reading [first, last] from l.
func batches(first, last uint64, l raft.LogStore) func() ([]*raft.Log, error) {
	next := first
	return func() ([]*raft.Log, error) {
		if last == 0 || next > last {
			return nil, nil
		}
		var out []*raft.Log
		for ; next <= last && len(out) < migrateBatch; next++ {
			e := new(raft.Log)
			if err := l.GetLog(next, e); err != nil {
				return nil, fmt.Errorf("read entry %d: %w", next, err)
			}
			out = append(out, e)
		}
		return out, nil
	}
}

// readStableKeys returns every key and value in raft.db's stable store
// (raft-boltdb's "conf" bucket).
func readStableKeys(path string) (map[string][]byte, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	out := map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("conf"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// writeMarker durably creates the migration marker.
func writeMarker(path, dir string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
