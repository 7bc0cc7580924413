package raftstore

import (
	"time"

	"github.com/dialkv/dialkv/raftstore/wal"
	"golang.org/x/time/rate"
)

// A fixed Config.SnapshotRate trades one thing for the other: no bound
// moves a node's share of 1 GiB fastest (7-9 s here since snapshots are
// references, 12 s before) but lets foreground p99 grow about 2x or more,
// while a bound keeps it lower and takes longer (docs/performance.md,
// sessions 17, 18 and 23). What the
// foreground waits for is the node's WAL fsync, queued on the disk behind
// the snapshots' writes. So Config.SnapshotRateAdaptive steers the pace
// by that wait: additive increase while the WAL's syncs take about as
// long as at rest, halving what flowed when they take more than twice as
// long (the loop TCP uses for a shared link, with the sync time in place
// of loss).

// Adaptive pacing's settings.
const (
	// adaptTick is how often the pace is set: a few dozen syncs, and
	// shorter than a 1 MiB snapshot sync's backlog lasts.
	adaptTick = 100 * time.Millisecond
	// adaptStep is the additive increase per tick: from the floor to
	// 256 MiB/s in 1.5 s.
	adaptStep = 16 << 20
	// adaptCeiling stands for no bound when Config.SnapshotRate is 0:
	// faster than this machine's disk by several times.
	adaptCeiling = 1 << 30
	// adaptSlack is the least rise over the resting sync time that
	// counts as congestion, so that a fast disk's few microseconds of
	// jitter do not.
	adaptSlack = 300 * time.Microsecond
	// adaptBaseFloor keeps the resting sync time, once learned, from
	// settling below what any real fsync takes.
	adaptBaseFloor = 50 * time.Microsecond
)

// paceControl decides the adaptive pace, one tick at a time. It holds no
// lock and is driven by one goroutine (Store.adapt), so tests drive it
// directly.
type paceControl struct {
	floor, ceiling float64       // bytes a second
	cur            float64       // the pace now
	base           time.Duration // the WAL's sync time at rest; 0: not yet seen
	syncs          uint64        // the WAL's group commits so far (last tick)
	syncTime       time.Duration // their total time (last tick)
}

func newPaceControl(ceiling int64) *paceControl {
	c := float64(ceiling)
	if ceiling <= 0 {
		c = adaptCeiling
	}
	return &paceControl{floor: MinSnapshotRate, ceiling: c, cur: c}
}

// next returns the pace for the coming tick, given the WAL's counters now
// and the snapshot bytes paced over the last dt.
func (c *paceControl) next(syncs uint64, syncTime time.Duration, paced int64, dt time.Duration) float64 {
	n, took := syncs-c.syncs, syncTime-c.syncTime
	c.syncs, c.syncTime = syncs, syncTime
	if n == 0 {
		// No foreground sync to judge by: nothing waits on the disk.
		c.cur = min(c.ceiling, c.cur+adaptStep)
		return c.cur
	}
	mean := took / time.Duration(n)
	// The resting sync time: the fastest tick seen, and at rest it
	// follows the disk up too. A node that joins meets its first syncs
	// while snapshots already arrive, so it cannot wait for rest; the
	// fastest tick is what the disk does when the moves let it.
	switch {
	case c.base == 0 || mean < c.base:
		c.base = max(mean, adaptBaseFloor)
	case paced == 0:
		c.base += (mean - c.base) / 8
	}
	if paced == 0 {
		c.cur = min(c.ceiling, c.cur+adaptStep)
		return c.cur
	}
	if mean > 2*c.base && mean > c.base+adaptSlack {
		flowed := float64(paced) / dt.Seconds()
		c.cur = max(c.floor, min(c.cur, flowed)/2)
		return c.cur
	}
	c.cur = min(c.ceiling, c.cur+adaptStep)
	return c.cur
}

// syncCounts returns the WAL's group commits and their total time.
func syncCounts(st wal.Stats) (uint64, time.Duration) {
	var n uint64
	for _, b := range st.SyncHistogram {
		n += b
	}
	return n, st.SyncTime
}

// adapt sets the snapshot pace every adaptTick until the store closes.
func (s *Store) adapt(c *paceControl) {
	defer close(s.adaptDone)
	t := time.NewTicker(adaptTick)
	defer t.Stop()
	last := time.Now()
	c.syncs, c.syncTime = syncCounts(s.wal.Stats())
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			n, took := syncCounts(s.wal.Stats())
			pace := c.next(n, took, s.snapFlow.Swap(0), now.Sub(last))
			last = now
			s.snapPace.SetLimit(rate.Limit(pace))
			s.snapBase.Store(int64(c.base))
		}
	}
}

// SnapshotPace returns the bytes a second snapshots are paced at now: the
// fixed Config.SnapshotRate, the adaptive pace, or 0 for no bound.
func (s *Store) SnapshotPace() int64 {
	if s.snapPace == nil {
		return 0
	}
	return int64(s.snapPace.Limit())
}
