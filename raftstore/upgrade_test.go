package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// oldRangeKind is how a range kept its Raft log before the WAL.
type oldRangeKind int

const (
	oldSegmentLog oldRangeKind = iota // ranges/ID/log (SegmentLog) + ranges/ID/raft.db
	oldBoltLog                        // everything in ranges/ID/raft.db (before the segment log)
)

// upgradeRange is a range of the data directory an older build leaves.
type upgradeRange struct {
	desc Descriptor
	kind oldRangeKind
	// snapshot: take a snapshot halfway and compact the log, so that the
	// log no longer begins at 1 and the range has a snapshot on disk.
	snapshot bool
}

var upgradeRanges = []upgradeRange{
	{desc: Descriptor{ID: 2, Start: []byte("a"), End: []byte("m"), Generation: 1}, kind: oldSegmentLog, snapshot: true},
	{desc: Descriptor{ID: 3, Start: []byte("m"), End: []byte("t"), Generation: 1}, kind: oldSegmentLog},
	{desc: Descriptor{ID: 4, Start: []byte("t"), Generation: 1}, kind: oldBoltLog},
}

// droppedRange is a range the older build dropped, but whose directory
// a crash kept (its descriptor went first).
const droppedRange = 9

const upgradeKeys = 300 // per range

func upgradeKey(d Descriptor, i int) []byte { return fmt.Appendf(nil, "%s%05d", d.Start, i) }
func upgradeValue(d Descriptor, i int) []byte {
	return fmt.Appendf(nil, "range %d value %d", d.ID, i)
}

func singleNodeRaftConfig(trailing uint64) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 30 // only when the test asks
	conf.TrailingLogs = trailing
	conf.NoSnapshotRestoreOnStart = true // as the shard: the FSM is durable
	conf.Logger = hclog.NewNullLogger()
	return conf
}

func waitLeader(t *testing.T, r *raft.Raft) {
	t.Helper()
	for i := 0; r.State() != raft.Leader; i++ {
		if i == 500 {
			t.Fatalf("no leader after 5s (state %v)", r.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func raftPut(t *testing.T, r *raft.Raft, key, value []byte) {
	t.Helper()
	f := r.Apply((&Command{Op: OpPut, Key: key, Value: value}).Encode(nil), 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	if res, ok := f.Response().(*Result); !ok || res.Err != nil {
		t.Fatalf("put %s: %+v", key, f.Response())
	}
}

// writeOldDataDir writes into dir what the build before the WAL left after
// a crash: per-range logs and stable stores (with that build's code:
// SegmentLog, raft-boltdb), snapshots, a state.db that is behind the logs
// and has no layout record, the leftovers of a dropped range, and no
// DATA/wal.
func writeOldDataDir(t *testing.T, dir string) {
	t.Helper()
	s := openStore(t, dir)
	type running struct {
		r       *raft.Raft
		closers []func() error
	}
	var rs []running
	for _, ur := range upgradeRanges {
		fsm, err := s.OpenRange(ur.desc)
		if err != nil {
			t.Fatal(err)
		}
		rangeDir := s.RangeDir(ur.desc.ID)
		if err := os.MkdirAll(rangeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		// As the old OpenRaftStorage opened them.
		db, err := raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(rangeDir, "raft.db"),
			BoltOptions: &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType},
		})
		if err != nil {
			t.Fatal(err)
		}
		var logs raft.LogStore = db
		closers := []func() error{db.Close}
		if ur.kind == oldSegmentLog {
			seg, err := OpenSegmentLog(filepath.Join(rangeDir, "log"))
			if err != nil {
				t.Fatal(err)
			}
			logs, closers = seg, append(closers, seg.Close)
		}
		snaps, err := raft.NewFileSnapshotStoreWithLogger(rangeDir, 2, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		conf := singleNodeRaftConfig(10)
		_, trans := raft.NewInmemTransport("n1")
		if err := raft.BootstrapCluster(conf, logs, db, snaps, trans, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(conf, fsm, logs, db, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		waitLeader(t, r)
		for i := range upgradeKeys / 2 {
			raftPut(t, r, upgradeKey(ur.desc, i), upgradeValue(ur.desc, i))
		}
		if ur.snapshot {
			// The FSM's snapshot commits it to state.db first.
			if err := r.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
		rs = append(rs, running{r, closers})
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, ur := range upgradeRanges {
		for k := upgradeKeys / 2; k < upgradeKeys; k++ {
			raftPut(t, rs[i].r, upgradeKey(ur.desc, k), upgradeValue(ur.desc, k))
		}
	}
	for _, run := range rs {
		if err := run.r.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
		for _, c := range run.closers {
			if err := c(); err != nil {
				t.Fatal(err)
			}
		}
	}
	crash(s)

	dropped := filepath.Join(dir, "ranges", fmt.Sprint(droppedRange))
	seg, err := OpenSegmentLog(filepath.Join(dropped, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := seg.StoreLogs(walTestEntries(1, 5, 1)); err != nil {
		t.Fatal(err)
	}
	seg.Close()
	if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Delete(layoutKey) }); err != nil {
		t.Fatal(err)
	}
}

// checkUpgraded asserts that the store in dir has the current layout and
// no old files, and that every range, started on it, has every key.
func checkUpgraded(t *testing.T, s *Store) {
	t.Helper()
	if layout, err := readLayout(s.db); err != nil || layout != layoutCurrent {
		t.Fatalf("storage layout %d, %v; want %d", layout, err, layoutCurrent)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Dir, "ranges", fmt.Sprint(droppedRange))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the dropped range's directory is still there (%v)", err)
	}
	for _, ur := range upgradeRanges {
		checkOldFilesGone(t, s.RangeDir(ur.desc.ID))
		fsm, err := s.OpenRange(ur.desc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.OpenRaftStorage(ur.desc.ID, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		if first, _ := st.Log().FirstIndex(); ur.snapshot && first <= 1 {
			t.Errorf("range %d: log begins at %d, want the compacted log", ur.desc.ID, first)
		}
		_, trans := raft.NewInmemTransport("n1")
		// No bootstrap: Raft must find its configuration, term and log.
		r, err := raft.NewRaft(singleNodeRaftConfig(10), fsm, st.Log(), st.Stable(), st.Snapshots, trans)
		if err != nil {
			t.Fatal(err)
		}
		waitLeader(t, r)
		if err := r.Barrier(5 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		for i := range upgradeKeys {
			v, _, found, _, err := fsm.Get(upgradeKey(ur.desc, i))
			if err != nil || !found || !bytes.Equal(v, upgradeValue(ur.desc, i)) {
				t.Errorf("range %d: key %s = %q, found %v, %v; want %q", ur.desc.ID, upgradeKey(ur.desc, i), v, found, err, upgradeValue(ur.desc, i))
				break
			}
		}
		if err := r.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
}

// A data directory written by the build before the WAL, whose state.db
// is behind its logs (a crash), opens with every key: each range's log
// and stable store move into the WAL, and its Raft group replays the
// entries state.db lacks.
func TestOpen_UpgradesPerRangeLogsIntoTheWAL(t *testing.T) {
	dir := t.TempDir()
	writeOldDataDir(t, dir)
	s := openStore(t, dir)
	defer s.Close()
	checkUpgraded(t, s)
}

// A crash at any step of the upgrade leaves a directory that the next
// Open upgrades to the end, with every key. (The steps within one range's
// move are MigrateRangeToWAL's tests.)
func TestOpen_UpgradeInterruptedAnywhereCompletes(t *testing.T) {
	template := t.TempDir()
	writeOldDataDir(t, template)
	steps := len(upgradeRanges) + 1 // a range moved, each; the dropped range gone
	for crashAt := 1; crashAt <= steps; crashAt++ {
		t.Run(fmt.Sprintf("crash at step %d", crashAt), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if out, err := exec.Command("cp", "-a", template, dir).CombinedOutput(); err != nil {
				t.Fatalf("copy: %v: %s", err, out)
			}
			cfg := DefaultConfig(dir)
			cfg.Logger = testLogger(t)
			boom := errors.New("crash")
			var seen []migrateStep
			cfg.crashAt = func(step migrateStep) error {
				seen = append(seen, step)
				if len(seen) == crashAt {
					return boom
				}
				return nil
			}
			if s, err := Open(cfg); !errors.Is(err, boom) {
				if err == nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want the crash at step %d (steps seen: %v)", err, crashAt, seen)
			}
			// What the crash left: the ranges moved so far have no old
			// files, the others all of theirs, and no layout record yet.
			moved := 0
			for _, ur := range upgradeRanges {
				if _, err := os.Stat(filepath.Join(dir, "ranges", fmt.Sprint(ur.desc.ID), "raft.db")); errors.Is(err, os.ErrNotExist) {
					moved++
				}
			}
			if want := min(crashAt, len(upgradeRanges)); moved != want {
				t.Fatalf("%d ranges moved before the crash at step %d, want %d", moved, crashAt, want)
			}
			s := openStore(t, dir)
			defer s.Close()
			checkUpgraded(t, s)
		})
	}
}

// A directory of layout 2 (the WAL, snapshots written whole) opens as
// layout 3 with nothing to move: its whole snapshot files stay readable.
func TestOpen_UpgradesTheWALLayoutToReferences(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := mustRange(t, s, 1)
	applyPuts(f, 0, 10, 0)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(layoutKey, binary.BigEndian.AppendUint64(nil, layoutWAL))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	defer s.Close()
	if layout, err := readLayout(s.db); err != nil || layout != layoutRefSnapshots {
		t.Fatalf("storage layout %d, %v; want %d", layout, err, layoutRefSnapshots)
	}
	mustGet(t, mustRange(t, s, 1), "k009", fmt.Sprintf("%0100d", 9))
}

// A layout newer than this build knows is refused, and left as it is.
func TestOpen_RefusesANewerLayout(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(layoutKey, binary.BigEndian.AppendUint64(nil, layoutCurrent+1))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfg := DefaultConfig(dir)
	cfg.Logger = testLogger(t)
	if s, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "newer build") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open = %v, want a refusal of layout %d", err, layoutCurrent+1)
	}
	if _, err := os.Stat(filepath.Join(dir, "wal")); err != nil {
		t.Fatalf("the WAL directory: %v", err)
	}
}

// A dropped range leaves nothing in the WAL, also when a crash came
// between its descriptor's removal and the WAL's drop record.
func TestDropRange_RemovesTheRangeFromTheWAL(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, id := range []uint64{2, 3} {
		if _, err := s.OpenRange(Descriptor{ID: id, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		st, err := s.OpenRaftStorage(id, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Log().StoreLogs(walTestEntries(1, 20, 1)); err != nil {
			t.Fatal(err)
		}
		if err := st.Stable().SetUint64([]byte("CurrentTerm"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DropRange(2); err != nil {
		t.Fatal(err)
	}
	// Range 3 loses its descriptor, then the process dies.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Delete(descKey(3)) }); err != nil {
		t.Fatal(err)
	}
	crash(s)
	s = openStore(t, dir)
	defer s.Close()
	if got := s.wal.Ranges(); len(got) != 0 {
		t.Fatalf("the WAL holds ranges %v after both were dropped", got)
	}
	for _, id := range []uint64{2, 3} {
		if _, err := os.Stat(s.RangeDir(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("range %d's directory is still there (%v)", id, err)
		}
	}
}
