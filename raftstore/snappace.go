package raftstore

import (
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Moving a replica writes its range to the receiver's disk once: the
// stream goes straight into the state database's staging bucket
// (refsnap.go). At the disk's full speed those writes hold every
// foreground WAL sync of the node behind them, so Config.SnapshotRate,
// when set (kvd sets 96 MiB/s unless told otherwise), paces the bytes of
// snapshots a node receives, node-wide. A
// snapshot the node takes itself writes a reference, not the range.

// MinSnapshotRate is the least Config.SnapshotRate. Placement gives a
// move a minute to catch up, with two snapshots arriving at a node at
// once: a 64 MiB range must cross the rate at least twice within it.
const MinSnapshotRate = 16 << 20

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
