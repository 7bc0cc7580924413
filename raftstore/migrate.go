package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// The storage layout of a data directory, recorded in state.db (meta
// bucket, key "layout", 8 bytes big-endian) so that a build can tell
// what it opens: it migrates an older layout in place and refuses a newer
// one. A change to where or how the node keeps its Raft state bumps
// layoutCurrent and migrates from the layout it finds.
const (
	// layoutPerRange (no record: every build before the WAL): each range
	// has its own log (ranges/ID/log, a SegmentLog; before that, in
	// raft.db) and stable store (ranges/ID/raft.db).
	layoutPerRange uint64 = 1
	// layoutWAL: the ranges' logs and stable stores are in the node's
	// write-ahead log (DATA/wal, format versioned inside: raftstore/wal).
	layoutWAL uint64 = 2
	// layoutRefSnapshots: a range's own snapshots are references to
	// state.db, not copies of the range (refsnap.go). Nothing moves on
	// the way up: files written whole are still read. The number keeps
	// a build before it, which would send a reference's few bytes as a
	// snapshot, from opening the directory.
	layoutRefSnapshots uint64 = 3

	layoutCurrent = layoutRefSnapshots
)

var layoutKey = []byte("layout")

// readLayout returns the data directory's storage layout.
func readLayout(db *bolt.DB) (uint64, error) {
	layout := layoutPerRange
	err := db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(metaBucket).Get(layoutKey)
		switch {
		case v == nil:
		case len(v) == 8:
			layout = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("raftstore: state.db: storage layout record of %d bytes, want 8", len(v))
		}
		return nil
	})
	return layout, err
}

// migrateStep is a point in Store.settle where a crash could stop it
// (see Config.crashAt).
type migrateStep string

const (
	stepRangeMoved  migrateStep = "range moved"  // after a range's MigrateRangeToWAL
	stepOrphansGone migrateStep = "orphans gone" // after the leftovers of dropped ranges are removed
)

// settle brings the data directory to the current layout and finishes
// what a crash interrupted, before any range opens:
//
//   - every hosted range whose old log or raft.db is still in its
//     directory moves into the WAL (MigrateRangeToWAL, crash-safe on its
//     own). Under layoutWAL that happens only after a downgrade, whose
//     writes are then the range's newest.
//   - a range directory or WAL content without a descriptor is what a
//     DropRange a crash interrupted left (the descriptor goes first), and
//     goes now. Descriptors are written before a range's first log write
//     (OpenRange before OpenRaftStorage, and by the split or snapshot
//     that creates a range), so nothing live lacks one.
//
// The layout is recorded last: a crash before that repeats the whole
// pass, and each step is idempotent.
func (s *Store) settle(layout uint64) error {
	descs, err := s.Descriptors()
	if err != nil {
		return fmt.Errorf("raftstore: read descriptors: %w", err)
	}
	hosted := make(map[uint64]bool, len(descs))
	for _, d := range descs {
		hosted[d.ID] = true
	}
	rangesDir := filepath.Join(s.cfg.Dir, "ranges")
	dirs, err := os.ReadDir(rangesDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("raftstore: %w", err)
	}
	removed := false
	for _, d := range dirs {
		id, err := strconv.ParseUint(d.Name(), 10, 64)
		if err != nil || !d.IsDir() {
			continue // not a range's
		}
		if !hosted[id] {
			if err := os.RemoveAll(filepath.Join(rangesDir, d.Name())); err != nil {
				return fmt.Errorf("raftstore: remove the rest of dropped range %d: %w", id, err)
			}
			removed = true
			continue
		}
		moved, err := MigrateRangeToWAL(s.wal, id, s.RangeDir(id))
		if err != nil {
			return err
		}
		if moved {
			s.log.Info("moved a range's log into the node's WAL", "range", id)
			if err := s.crashPoint(stepRangeMoved); err != nil {
				return err
			}
		}
	}
	if removed {
		if err := syncDir(rangesDir); err != nil {
			return err
		}
	}
	for _, id := range s.wal.Ranges() {
		if !hosted[id] {
			if err := s.wal.DropRange(id); err != nil {
				return fmt.Errorf("raftstore: drop the log of dropped range %d: %w", id, err)
			}
		}
	}
	if err := s.crashPoint(stepOrphansGone); err != nil {
		return err
	}
	if layout == layoutCurrent {
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(layoutKey, binary.BigEndian.AppendUint64(nil, layoutCurrent))
	})
	if err != nil {
		return fmt.Errorf("raftstore: record storage layout %d: %w", layoutCurrent, err)
	}
	s.log.Info("data directory upgraded", "layout", layoutCurrent, "from", layout)
	return nil
}

// crashPoint lets a test stop settle at step, as a crash there would.
func (s *Store) crashPoint(step migrateStep) error {
	if s.cfg.crashAt == nil {
		return nil
	}
	return s.cfg.crashAt(step)
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
	fenced, err := isFence(logDir)
	if err != nil {
		return fail(err)
	}
	if fenced {
		// Moved already. A raft.db beside the fence was created by an
		// older kvd that then failed on the fence: it holds nothing, and
		// importing it would replace the range's real state.
		if err := os.Remove(dbPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(err)
		}
		return false, nil
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
	if err := writeFence(rangeDir); err != nil {
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
// fenceText is what a range's "log" holds once its Raft state lives in the
// WAL. It is a file where kvd before layoutWAL expects a directory: such
// a kvd fails to open the range ("not a directory") and stops, instead of
// starting the range from an empty log and stable store, which lost
// acknowledged writes when a node was rolled back. A person who looks
// finds this text.
const fenceText = "dialkv: this range's Raft log and term live in the node's write-ahead log (DATA/wal, storage layout 2).\n" +
	"A kvd older than that layout cannot open this data directory; upgrade it instead.\n"

// writeFence puts the fence in rangeDir, durably (write, sync, rename,
// sync the directory), unless it is there already.
func writeFence(rangeDir string) error {
	path := filepath.Join(rangeDir, "log")
	if ok, err := isFence(path); ok || err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fenceText), 0o644); err != nil {
		return err
	}
	if err := writeMarkerSync(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(rangeDir)
}

// isFence reports whether path is a range's fence (a regular file).
func isFence(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.Mode().IsRegular(), nil
}

func writeMarkerSync(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

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
