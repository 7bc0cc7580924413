package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/raftstore/wal"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/time/rate"
)

// Config configures a node's Store.
type Config struct {
	// Dir is the node's data directory.
	Dir string
	// CommitInterval is how often applied writes are committed to bbolt.
	// Shorter means less replay after a crash and smaller overlays; each
	// commit costs two fsyncs for the whole node.
	CommitInterval time.Duration
	// CommitBytes commits early once a range's overlay holds this much.
	CommitBytes int
	Logger      *slog.Logger
	// EventRetentionBytes and EventRetentionAge bound each range's change
	// feed (events.go): the oldest events go once either is exceeded
	// (0: no bound of that kind).
	EventRetentionBytes int64
	EventRetentionAge   time.Duration
	// RestoreChunkBytes is how much of an incoming snapshot one bbolt
	// transaction writes (Restore): the other ranges' commits and the
	// disk's other writers wait for at most one chunk, not a whole range.
	RestoreChunkBytes int
	// SnapshotRate bounds, in bytes a second, the snapshots the node
	// receives (and restores of whole snapshot files of older builds),
	// all ranges together, each stream
	// taking equal turns (snappace.go); 0: no bound, else at least
	// MinSnapshotRate.
	SnapshotRate int64
	// SnapshotRateAdaptive steers that pace by the node's WAL sync time
	// (snapadapt.go), up to SnapshotRate if set.
	SnapshotRateAdaptive bool

	// crashAt, when set, is called at each step of Open's upgrade pass
	// (settle); an error stops it there, as a crash would. Tests only.
	crashAt func(migrateStep) error
}

// DefaultCommitInterval: a commit writes every page its writes touched
// since the last one, so when writes keep coming back to the same pages
// (a hot key space) a longer interval writes each page less often. At
// 100 ms the commits took 30% of a node's CPU under 64 writers over 10,000
// keys, at 500 ms 18% (docs/performance.md, session 20). What it costs: a
// restart replays up to this much more of the log, and overlays hold up
// to this much more in memory (CommitBytes commits early).
const DefaultCommitInterval = 500 * time.Millisecond

// DefaultConfig returns the configuration kvd runs with.
func DefaultConfig(dir string) Config {
	return Config{
		Dir: dir, CommitInterval: DefaultCommitInterval, CommitBytes: 8 << 20, Logger: slog.Default(),
		EventRetentionBytes: DefaultEventRetentionBytes, EventRetentionAge: DefaultEventRetentionAge,
		RestoreChunkBytes: DefaultRestoreChunkBytes,
	}
}

// DefaultRestoreChunkBytes: a 1 MiB write and its fsync take a few
// milliseconds, which is what a foreground sync may wait behind on a
// shared disk.
const DefaultRestoreChunkBytes = 1 << 20

// The change feed's default budget per range: an hour, or 64 MiB (about
// as much as the range's own data before it splits).
const (
	DefaultEventRetentionBytes = 64 << 20
	DefaultEventRetentionAge   = time.Hour
)

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("raftstore: empty data directory")
	case c.CommitInterval <= 0:
		return errors.New("raftstore: commit interval must be positive")
	case c.CommitBytes <= 0:
		return errors.New("raftstore: commit bytes must be positive")
	case c.EventRetentionBytes < 0 || c.EventRetentionAge < 0:
		return errors.New("raftstore: event retention must not be negative")
	case c.RestoreChunkBytes <= 0:
		return errors.New("raftstore: restore chunk bytes must be positive")
	case c.SnapshotRate < 0 || (c.SnapshotRate > 0 && c.SnapshotRate < MinSnapshotRate):
		return fmt.Errorf("raftstore: snapshot rate %d bytes/s: want 0 (no bound) or at least %d", c.SnapshotRate, MinSnapshotRate)
	}
	return nil
}

var (
	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("raftstore: store closed")
	// ErrRangeDropped: the range's state left this node (DropRange) while
	// a reader still held its replica.
	ErrRangeDropped = errors.New("raftstore: range dropped from this node")

	metaBucket = []byte("meta")
)

// Store is the node-wide state-machine database shared by every range the
// node hosts, plus the committer that makes their applied writes durable
// together, and the node's write-ahead log, which holds every range's
// Raft log and stable store.
//
// Locking: acquire commitMu before s.mu and before any range's
// RangeFSM.mu; never hold s.mu while taking a range's mu (commit copies
// the ranges out of s.mu first). A range's split takes the node's split
// lock (RangeFSM.splitLock) before commitMu. stats.mu is a leaf. Nothing
// waits on Raft while holding commitMu: a split holds it, on the FSM
// goroutine, for one bbolt transaction, and Restore for the small one
// that switches a staged snapshot in.
type Store struct {
	cfg Config
	db  *bolt.DB
	wal *wal.WAL
	log *slog.Logger

	// mu guards the fields below until the blank line.
	mu     sync.Mutex
	ranges map[uint64]*RangeFSM
	closed bool

	// commitMu serialises commits with each other, with Restore, with a
	// split and with DropRange, so a range's frozen overlays and its
	// bucket change only under it. It guards no field of its own.
	commitMu sync.Mutex

	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	stats CommitStats // its own mu

	// snapPace paces received snapshots (and restores of whole files)
	// (Config.SnapshotRate); nil: no bound. snapStop, closed by
	// StopSnapshots (once, snapStopOnce), ends the waits of both.
	snapPace     *rate.Limiter
	snapStop     chan struct{}
	snapStopOnce sync.Once
	// With Config.SnapshotRateAdaptive: the bytes paced since the last
	// tick, the WAL's resting sync time it learned (ns, for tests), and
	// adapt's end (nil when not adaptive).
	snapFlow  atomic.Int64
	snapBase  atomic.Int64
	adaptDone chan struct{}
}

// CommitStats counts the committer's work, for metrics and tests. mu
// guards every field; it is a leaf lock.
type CommitStats struct {
	mu       sync.Mutex
	Commits  uint64
	Failures uint64
	Keys     uint64
	Duration time.Duration
}

// state.db's map. Virtual address space only: a map larger than the file
// means a commit never has to remap it until the file outgrows the map,
// and a remap waits for every read transaction, among them those of
// snapshots being sent, which last as long as the receiver takes
// (refsnap.go). 64 GiB leaves room for thousands of stores in one
// process (tests) in a 47-bit address space.
const (
	stateMapBytes         = 64 << 30
	stateMapFallbackBytes = 4 << 30
)

func openStateDB(path string, mapBytes int) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         2 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: mapBytes,
	})
}

// Open opens (creating if needed) the store under cfg.Dir: state.db and
// the node's write-ahead log (DATA/wal). A data directory of an older
// layout is upgraded in place first (see settle). Then it starts the
// committer.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: create data dir: %w", err)
	}
	db, err := openStateDB(filepath.Join(cfg.Dir, "state.db"), stateMapBytes)
	if errors.Is(err, syscall.ENOMEM) {
		// A bound on the address space (ulimit -v): map what it allows.
		cfg.Logger.Warn("raftstore: cannot map state.db as far as wanted; a commit that grows it past the map will wait for snapshots being sent", "wanted", stateMapBytes, "err", err)
		db, err = openStateDB(filepath.Join(cfg.Dir, "state.db"), stateMapFallbackBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("raftstore: open state.db (is another kvd using %s?): %w", cfg.Dir, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		// A snapshot half-installed when the node stopped: its range still
		// has the state it had before, and Raft sends the snapshot again.
		if err := tx.DeleteBucket(restoreStaging); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(metaBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("raftstore: init state.db: %w", err)
	}
	layout, err := readLayout(db)
	if err == nil && layout > layoutCurrent {
		err = fmt.Errorf("raftstore: %s has storage layout %d, written by a newer build; this one knows up to %d", cfg.Dir, layout, layoutCurrent)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	w, err := wal.Open(filepath.Join(cfg.Dir, "wal"), wal.Options{Logger: cfg.Logger.With("component", "wal")})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("raftstore: open the write-ahead log: %w", err)
	}
	pace := cfg.SnapshotRate
	var ctl *paceControl
	if cfg.SnapshotRateAdaptive {
		ctl = newPaceControl(cfg.SnapshotRate)
		pace = int64(ctl.cur)
	}
	s := &Store{
		cfg:      cfg,
		db:       db,
		wal:      w,
		log:      cfg.Logger,
		ranges:   make(map[uint64]*RangeFSM),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		snapPace: newPacer(pace),
		snapStop: make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := s.settle(layout); err != nil {
		return nil, errors.Join(err, w.Close(), db.Close())
	}
	if ctl != nil {
		s.adaptDone = make(chan struct{})
		go s.adapt(ctl)
	}
	go s.run()
	return s, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// dataFillPercent is how full bbolt packs a data page before it splits
// it. Its default, half, suits keys that arrive in random order; keys
// that arrive in order (a bulk load, sequential ids, a split's or a
// snapshot's copy) would leave every page half empty, doubling the file
// and the pages a node keeps mapped. Random inserts fill pages to about
// the same level either way, so a high setting only saves space.
const dataFillPercent = 0.9

func dataBucket(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("r"), id)
}

// storedApplied is range id's applied index as committed in meta (the
// meta bucket of some transaction); false if none is stored yet.
func storedApplied(meta *bolt.Bucket, id uint64) (uint64, bool) {
	v := meta.Get(appliedKey(id))
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

func appliedKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("applied/"), id)
}

func sizeKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("size/"), id)
}

// storedSize is what one bbolt entry adds to a range's size: its key and
// value, without the stored revision.
func storedSize(k, stored []byte) int64 { return int64(len(k) + len(stored) - 8) }

func encodeSize(keys, size int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(keys)), uint64(size))
}

// loadSize reads range id's size, counting it (once, for data written
// before sizes were kept) when it was never stored.
func loadSize(tx *bolt.Tx, id uint64, bucket []byte) (keys, size int64, err error) {
	meta := tx.Bucket(metaBucket)
	if v := meta.Get(sizeKey(id)); len(v) == 16 {
		return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), nil
	}
	if b := tx.Bucket(bucket); b != nil {
		err = b.ForEach(func(k, v []byte) error {
			keys++
			size += storedSize(k, v)
			return nil
		})
	}
	if err == nil && tx.Writable() {
		err = meta.Put(sizeKey(id), encodeSize(keys, size))
	}
	return keys, size, err
}

func descKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("desc/"), id)
}

// OpenRange returns the state machine of the range desc describes,
// creating its bucket and storing desc on first use. When the node already
// has the range, its stored descriptor (which splits and snapshots keep
// current) wins over desc. The FSM resumes from its durable applied index.
func (s *Store) OpenRange(desc Descriptor) (*RangeFSM, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if f, ok := s.ranges[desc.ID]; ok {
		return f, nil
	}
	f := newRangeFSM(s, desc.Clone())
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(f.bucket); err != nil {
			return err
		}
		meta := tx.Bucket(metaBucket)
		if applied, ok := storedApplied(meta, desc.ID); ok {
			f.applied.Store(applied)
		}
		if err := openFeed(tx, desc, f); err != nil {
			return err
		}
		if !desc.IsMeta() {
			if err := loadTxnState(tx, desc.ID, &f.txn); err != nil {
				return err
			}
		}
		keys, size, err := loadSize(tx, desc.ID, f.bucket)
		if err != nil {
			return err
		}
		f.sizeKeys.Store(keys)
		f.sizeBytes.Store(size)
		if v := meta.Get(descKey(desc.ID)); v != nil {
			stored, err := UnmarshalDescriptor(v)
			if err != nil {
				return err
			}
			f.desc = stored
			return nil
		}
		return meta.Put(descKey(desc.ID), desc.Marshal())
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: open range %d: %w", desc.ID, err)
	}
	f.durable.Store(f.applied.Load())
	s.ranges[desc.ID] = f
	return f, nil
}

// Descriptors lists the ranges this node holds, as stored.
func (s *Store) Descriptors() ([]Descriptor, error) {
	var out []Descriptor
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(metaBucket).Cursor()
		prefix := []byte("desc/")
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			d, err := UnmarshalDescriptor(v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// StopSnapshots ends every paced snapshot write and restore at once with
// ErrClosed, and every later one: a node shutting down calls it before it
// stops its ranges' Raft groups, which wait for those to end.
func (s *Store) StopSnapshots() {
	s.snapStopOnce.Do(func() { close(s.snapStop) })
}

// DropRange deletes everything the node holds for range id: its data,
// descriptor and applied index, then its log and stable store (durably
// dropped from the WAL) and snapshots. The range's Raft group must be
// shut down first. The descriptor goes first: should a crash interrupt
// the rest, the next Open finishes it (settle).
func (s *Store) DropRange(id uint64) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	delete(s.ranges, id)
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{dataBucket(id), eventBucket(id), leaseBucket(id), lockBucket(id), outcomeBucket(id)} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		if st := tx.Bucket(restoreStaging); st != nil && st.Bucket(dataBucket(id)) != nil {
			if err := st.DeleteBucket(dataBucket(id)); err != nil {
				return err
			}
		}
		meta := tx.Bucket(metaBucket)
		if err := meta.Delete(descKey(id)); err != nil {
			return err
		}
		if err := meta.Delete(eventFloorKey(id)); err != nil {
			return err
		}
		if err := meta.Delete(versionedKey(id)); err != nil {
			return err
		}
		if err := meta.Delete(eventSizeKey(id)); err != nil {
			return err
		}
		if err := meta.Delete(bootKey(id)); err != nil {
			return err
		}
		if err := meta.Delete(sizeKey(id)); err != nil {
			return err
		}
		return meta.Delete(appliedKey(id))
	})
	if err != nil {
		return fmt.Errorf("raftstore: drop range %d: %w", id, err)
	}
	if err := s.wal.DropRange(id); err != nil {
		return fmt.Errorf("raftstore: drop range %d: %w", id, err)
	}
	if err := os.RemoveAll(s.RangeDir(id)); err != nil {
		return fmt.Errorf("raftstore: drop range %d: %w", id, err)
	}
	return nil
}

// Flush commits every range's applied writes now and waits for the fsync.
func (s *Store) Flush() error {
	return s.commit()
}

// Stats returns a copy of the committer's counters.
func (s *Store) Stats() (commits, failures, keys uint64, total time.Duration) {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return s.stats.Commits, s.stats.Failures, s.stats.Keys, s.stats.Duration
}

// WALStats returns the node's write-ahead log's counters.
func (s *Store) WALStats() wal.Stats { return s.wal.Stats() }

// Close stops the committer, commits what is pending and closes the
// database, then the write-ahead log. Callers must have shut down the
// Raft groups first.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.StopSnapshots()
	<-s.done
	if s.adaptDone != nil {
		<-s.adaptDone
	}
	err := s.commit()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	// The log goes last, so that anything still holding a range's view
	// while the store shuts down finds it open.
	if cerr := s.wal.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) requestCommit() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		if err := s.commit(); err != nil {
			s.log.Error("state commit failed; will retry", "err", err)
		}
	}
}

type commitJob struct {
	f       *RangeFSM
	layers  []*overlay
	applied uint64
	// the range's size once the commit is durable
	keys, bytes int64
	evFloor     uint64 // the feed's floor once the commit is durable
	txn         frozenTxnState
}

// commit freezes every range's pending overlay and writes all frozen
// overlays and applied indexes in one bbolt transaction. Frozen overlays stay
// readable until the transaction is durable; if it fails they stay frozen
// and the next commit retries them.
func (s *Store) commit() error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()

	s.mu.Lock()
	ranges := make([]*RangeFSM, 0, len(s.ranges))
	for _, f := range s.ranges {
		ranges = append(ranges, f)
	}
	s.mu.Unlock()

	var jobs []commitJob
	now := time.Now()
	for _, f := range ranges {
		f.mu.Lock()
		if f.pending.len() > 0 {
			f.frozen = append(f.frozen, f.pending)
			f.pending = newOverlay()
		}
		applied := f.applied.Load()
		if len(f.frozen) > 0 || applied != f.durable.Load() {
			jobs = append(jobs, commitJob{f: f, layers: slices.Clone(f.frozen), applied: applied, txn: f.freezeTxnLocked()})
		}
		f.mu.Unlock()
	}
	if len(jobs) == 0 {
		return nil
	}

	start := time.Now()
	var keys uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		for i := range jobs {
			j := &jobs[i]
			b := tx.Bucket(j.f.bucket)
			if b == nil {
				return fmt.Errorf("range %d: bucket missing", j.f.id)
			}
			b.FillPercent = dataFillPercent
			// The events first: those whose previous value was left to
			// bbolt read it before the writes below replace it.
			if err := s.commitEvents(tx, j, now, b); err != nil {
				return fmt.Errorf("range %d: events: %w", j.f.id, err)
			}
			lb := tx.Bucket(leaseBucket(j.f.id))
			j.keys, j.bytes = j.f.sizeKeys.Load(), j.f.sizeBytes.Load()
			for _, layer := range j.layers {
				var werr error
				layer.tree.Ascend(func(e *entry) bool {
					keys++
					// The lookup reads the leaf the write changes anyway.
					old := b.Get(e.key)
					if old != nil {
						j.keys--
						j.bytes -= storedSize(e.key, old)
					}
					if lb != nil && (e.lease != 0 || (len(old) >= 8 && old[0]&0x80 != 0)) {
						if werr = updateLeaseIndex(lb, e, old); werr != nil {
							return false
						}
					}
					if e.deleted {
						werr = b.Delete(e.key)
					} else {
						stored := encodeStored(keyInfo{rev: e.rev, lease: e.lease, version: e.version}, e.value)
						j.keys++
						j.bytes += storedSize(e.key, stored)
						werr = b.Put(e.key, stored)
					}
					return werr == nil
				})
				if werr != nil {
					return fmt.Errorf("range %d: %w", j.f.id, werr)
				}
			}
			if err := writeTxnState(tx, j.f.id, j.txn); err != nil {
				return fmt.Errorf("range %d: transactions: %w", j.f.id, err)
			}
			if err := meta.Put(appliedKey(j.f.id), binary.BigEndian.AppendUint64(nil, j.applied)); err != nil {
				return err
			}
			if err := meta.Put(sizeKey(j.f.id), encodeSize(j.keys, j.bytes)); err != nil {
				return err
			}
		}
		return nil
	})
	s.stats.mu.Lock()
	if err != nil {
		s.stats.Failures++
	} else {
		s.stats.Commits++
		s.stats.Keys += keys
		s.stats.Duration += time.Since(start)
	}
	s.stats.mu.Unlock()
	if err != nil {
		for _, j := range jobs {
			j.f.mu.Lock()
			j.f.thawTxnLocked(j.txn)
			j.f.mu.Unlock()
		}
		return fmt.Errorf("raftstore: commit: %w", err)
	}
	for _, j := range jobs {
		j.f.mu.Lock()
		j.f.frozen = j.f.frozen[len(j.layers):]
		j.f.durable.Store(j.applied)
		j.f.evFloor.Store(j.evFloor)
		j.f.sizeKeys.Store(j.keys)
		j.f.sizeBytes.Store(j.bytes)
		j.f.mu.Unlock()
	}
	return nil
}

// keyInfo is what a range keeps about a key besides its value: the index
// of its last write, its lease (0: none) and its version (writes since it
// was created; 0 for a key last written by a release before versions).
type keyInfo struct {
	rev, lease, version uint64
}

// encodeStored is the bbolt value layout: the revision, then the value.
// The revision's top bits say what sits between the two: bit 63 a lease's
// 8-byte id, bit 62 the key's version (uvarint). A Raft index never
// reaches 1<<62, and a key with neither keeps the layout of releases
// before leases.
func encodeStored(k keyInfo, value []byte) []byte {
	head := k.rev
	b := make([]byte, 8, 8+8+binary.MaxVarintLen64+len(value))
	if k.lease != 0 {
		head |= storedLeaseFlag
		b = binary.BigEndian.AppendUint64(b, k.lease)
	}
	if k.version != 0 {
		head |= storedVersionFlag
		b = binary.AppendUvarint(b, k.version)
	}
	binary.BigEndian.PutUint64(b, head)
	return append(b, value...)
}

const (
	storedLeaseFlag   = 1 << 63
	storedVersionFlag = 1 << 62
)

func decodeStored(b []byte) (k keyInfo, value []byte, ok bool) {
	if len(b) < 8 {
		return k, nil, false
	}
	head := binary.BigEndian.Uint64(b)
	k.rev = head &^ (storedLeaseFlag | storedVersionFlag)
	b = b[8:]
	if head&storedLeaseFlag != 0 {
		if len(b) < 8 {
			return k, nil, false
		}
		k.lease, b = binary.BigEndian.Uint64(b), b[8:]
	}
	if head&storedVersionFlag != 0 {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return k, nil, false
		}
		k.version, b = v, b[w:]
	}
	return k, b, true
}
