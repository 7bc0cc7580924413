package raftstore

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"
)

// Moving a replica writes its range to disk three times: the sender
// persists a snapshot file, the receiver writes the stream to its own
// snapshot file and then restores it into bbolt. At the disk's full speed
// those writes, and the fsync that ends each file, hold every foreground
// WAL sync of the node behind them. So every snapshot file a range writes
// is synced as it grows (snapshotSyncBytes at a time, never a whole range
// at its close), and Config.SnapshotRate, when set, paces the bytes of
// snapshots a node receives and of its restores, node-wide. A snapshot
// the node takes itself (Persist) is not paced: it holds a bbolt read
// transaction, which would hold back the file's growth for as long.

// MinSnapshotRate is the least Config.SnapshotRate. Placement gives a
// move a minute to catch up, with two snapshots arriving at a node at
// once, each written and restored: a 64 MiB range must cross the rate
// four times within it.
const MinSnapshotRate = 16 << 20

// snapshotSyncBytes is how much of a snapshot file may wait in the page
// cache: its fsync is what a foreground WAL sync may queue behind on a
// shared disk (1 MiB: a probe p99 12% below 4 MiB's, docs/performance.md).
const snapshotSyncBytes = 1 << 20

// paceBurst is the unit a stream is charged in, one turn of the rate:
// small enough that the rate holds within a fraction of a second (a
// larger read or write is charged as several turns).
const paceBurst = 256 << 10

// newPacer returns a limiter of bytesPerSec, or nil for no bound.
func newPacer(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), paceBurst)
}

// takeBurst takes paceBurst bytes of lim's budget (its burst, so the
// reservation always succeeds), waiting until they are due. It returns
// ErrClosed, its budget handed back, if stop closes first.
func takeBurst(lim *rate.Limiter, stop <-chan struct{}) error {
	r := lim.ReserveN(time.Now(), paceBurst)
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-stop:
		r.Cancel()
		return ErrClosed
	}
}

// meter charges a limiter in whole bursts. The limiter serves
// reservations in turn, so streams charging it per write would share it
// in proportion to their write sizes (hashicorp/raft copies an incoming
// snapshot 32 KiB at a time, a restore reads 256 KiB or a whole large
// value): charged by the
// burst, every stream gets an equal turn.
type meter struct {
	lim  *rate.Limiter
	stop <-chan struct{}
	flow *atomic.Int64 // bytes paced, for adaptive pacing (snapadapt.go); may be nil
	owed int
}

func (m *meter) charge(n int) error {
	if m.lim == nil {
		return nil
	}
	if m.flow != nil {
		m.flow.Add(int64(n))
	}
	// At most n/paceBurst+1 turns: one per burst the caller moved.
	for m.owed += n; m.owed >= paceBurst; m.owed -= paceBurst {
		if err := takeBurst(m.lim, m.stop); err != nil {
			return err
		}
	}
	return nil
}

// pacedReader reads r no faster than its meter allows (Restore's stream).
type pacedReader struct {
	r io.Reader
	m *meter
}

func (p pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if perr := p.m.charge(n); perr != nil && err == nil {
		err = perr
	}
	return n, err
}

// syncedSnapshots is a range's FileSnapshotStore whose sinks are paced
// and synced as they grow (syncedSink).
type syncedSnapshots struct {
	*raft.FileSnapshotStore
	dir  string // FileSnapshotStore's snapshots directory
	lim  *rate.Limiter
	flow *atomic.Int64
	stop <-chan struct{}
	log  *slog.Logger
}

func (s *syncedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &syncedSink{SnapshotSink: sink, path: snapshotStatePath(s.dir, sink.ID()), m: meter{lim: s.lim, stop: s.stop, flow: s.flow}, log: s.log}, nil
}

// snapshotStatePath is where hashicorp/raft's FileSnapshotStore (v1.8)
// writes an unfinished snapshot's data: DIR/ID.tmp/state.bin
// (TestSyncedSnapshots_SyncTheFileFileSnapshotStoreWrites holds it to it).
func snapshotStatePath(dir, id string) string {
	return filepath.Join(dir, id+".tmp", "state.bin")
}

// syncedSink writes through to a FileSnapshotSink, paced (unless the
// node's own Persist writes it), and every snapshotSyncBytes fsyncs the
// file it writes through a handle of its own: fsync flushes the file's
// pages whichever descriptor asks. The sink's own Close still syncs what
// is left and decides the snapshot's fate; a failed intermediate sync
// only leaves more for that one. A failed Write makes Close cancel: the
// snapshot is never finished short.
type syncedSink struct {
	raft.SnapshotSink
	path     string
	m        meter
	log      *slog.Logger
	f        *os.File // nil until the first sync, or if it cannot open
	tried    bool
	unsynced int
	syncs    int   // intermediate syncs so far (tests)
	err      error // the first Write error
}

// unpaced stops pacing the sink: Persist holds a bbolt read transaction
// while it writes.
func (s *syncedSink) unpaced() { s.m.lim = nil }

// Write cuts b at the sync boundaries: Persist may hand over a whole large
// value at once, and no sync may flush more than snapshotSyncBytes.
func (s *syncedSink) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	written := 0
	for len(b) > 0 {
		n, err := s.SnapshotSink.Write(b[:min(len(b), snapshotSyncBytes-s.unsynced)])
		written += n
		if err == nil {
			err = s.m.charge(n)
		}
		if err != nil {
			s.err = err
			return written, err
		}
		b = b[n:]
		if s.unsynced += n; s.unsynced >= snapshotSyncBytes {
			s.syncSoFar()
		}
	}
	return written, nil
}

func (s *syncedSink) syncSoFar() {
	s.unsynced = 0
	s.syncs++
	if !s.tried {
		s.tried = true
		var err error
		if s.f, err = os.OpenFile(s.path, os.O_WRONLY, 0); err != nil && s.log != nil {
			// Only the syncs as it grows are lost; the sink's Close still syncs.
			s.log.Warn("raftstore: cannot sync a snapshot file as it grows", "err", err)
		}
	}
	if s.f != nil {
		s.f.Sync()
	}
}

func (s *syncedSink) Close() error {
	s.release()
	if s.err != nil {
		s.SnapshotSink.Cancel()
		return s.err
	}
	return s.SnapshotSink.Close()
}

func (s *syncedSink) Cancel() error {
	s.release()
	return s.SnapshotSink.Cancel()
}

func (s *syncedSink) release() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
