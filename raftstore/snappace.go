package raftstore

import (
	"io"
	"os"
	"path/filepath"
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
// at its close), and Config.SnapshotRate, when set, paces the bytes
// written into snapshot files and read into restores, node-wide.

// MinSnapshotRate is the least Config.SnapshotRate: a peer allows a
// snapshot stream 2 s per 256 KiB, and a few streams may share the rate.
const MinSnapshotRate = 4 << 20

// snapshotSyncBytes is how much of a snapshot file may wait in the page
// cache: its fsync is a few milliseconds of the disk's time.
const snapshotSyncBytes = 4 << 20

// paceBurst is the most one write or read takes before it waits for the
// rate: enough for the 64-256 KiB buffers in front of it, small enough
// that the rate holds within a fraction of a second.
const paceBurst = 256 << 10

// newPacer returns a limiter of bytesPerSec, or nil for no bound.
func newPacer(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), paceBurst)
}

// pace takes n bytes (at most paceBurst) of lim's budget, waiting until
// they are due; nil lim does not wait. It returns ErrClosed, its budget
// handed back, if stop closes first.
func pace(lim *rate.Limiter, n int, stop <-chan struct{}) error {
	if lim == nil {
		return nil
	}
	r := lim.ReserveN(time.Now(), min(n, paceBurst))
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

// pacedReader reads r no faster than lim allows (Restore's stream).
type pacedReader struct {
	r    io.Reader
	lim  *rate.Limiter
	stop <-chan struct{}
}

func (p pacedReader) Read(b []byte) (int, error) {
	if p.lim == nil {
		return p.r.Read(b)
	}
	n, err := p.r.Read(b[:min(len(b), paceBurst)])
	if n > 0 {
		if perr := pace(p.lim, n, p.stop); perr != nil && err == nil {
			err = perr
		}
	}
	return n, err
}

// syncedSnapshots is a range's FileSnapshotStore whose sinks are paced
// and synced as they grow (syncedSink).
type syncedSnapshots struct {
	*raft.FileSnapshotStore
	dir  string // FileSnapshotStore's snapshots directory
	lim  *rate.Limiter
	stop <-chan struct{}
}

func (s *syncedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &syncedSink{SnapshotSink: sink, path: snapshotStatePath(s.dir, sink.ID()), lim: s.lim, stop: s.stop}, nil
}

// snapshotStatePath is where hashicorp/raft's FileSnapshotStore (v1.8)
// writes an unfinished snapshot's data: DIR/ID.tmp/state.bin
// (TestSyncedSnapshots_SyncTheFileFileSnapshotStoreWrites holds it to it).
func snapshotStatePath(dir, id string) string {
	return filepath.Join(dir, id+".tmp", "state.bin")
}

// syncedSink writes through to a FileSnapshotSink, paced, and every
// snapshotSyncBytes fsyncs the file it writes through a handle of its
// own: fsync flushes the file's pages whichever descriptor asks. The
// sink's own Close still syncs what is left and decides the snapshot's
// fate; a failed intermediate sync only leaves more for that one.
type syncedSink struct {
	raft.SnapshotSink
	path     string
	lim      *rate.Limiter
	stop     <-chan struct{}
	f        *os.File // nil until the first sync, or if it cannot open
	tried    bool
	unsynced int
}

func (s *syncedSink) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), paceBurst)
		if err := pace(s.lim, n, s.stop); err != nil {
			return written, err
		}
		m, err := s.SnapshotSink.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
		if s.unsynced += m; s.unsynced >= snapshotSyncBytes {
			s.syncSoFar()
		}
	}
	return written, nil
}

func (s *syncedSink) syncSoFar() {
	s.unsynced = 0
	if !s.tried {
		s.tried = true
		s.f, _ = os.OpenFile(s.path, os.O_WRONLY, 0) // see syncedSink
	}
	if s.f != nil {
		s.f.Sync()
	}
}

func (s *syncedSink) Close() error {
	s.release()
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
