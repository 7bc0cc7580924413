package shard

import (
	"context"
	"sync"
	"time"
)

// A freshness stamp says: every write acknowledged before Sent is in the
// log at or below Index. A replica earns one by asking its leader for a read
// index (the leader confirms leadership with a quorum after the request
// arrives), noting Sent on its own monotonic clock before asking. Once the
// replica has applied Index, its state is no older than now - Sent, with no
// assumption about clocks on other hosts.
type stamp struct {
	sent  time.Time
	index uint64
}

// freshness keeps the replica's recent stamps, newest last.
type freshness struct {
	mu     sync.Mutex
	stamps [16]stamp
	n      int // number of valid stamps, at most len(stamps)
	next   int // ring position of the next write
}

func (f *freshness) record(sent time.Time, index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stamps[f.next] = stamp{sent: sent, index: index}
	f.next = (f.next + 1) % len(f.stamps)
	f.n = min(f.n+1, len(f.stamps))
}

// staleness returns how old a state that has applied index may be: the age
// of the newest stamp whose index has been applied. ok is false when no
// stamp applies (the replica has never been confirmed fresh, or not
// recently enough to remember).
func (f *freshness) staleness(applied uint64, now time.Time) (age time.Duration, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var best time.Time
	for i := 0; i < f.n; i++ {
		s := f.stamps[i]
		if s.index <= applied && s.sent.After(best) {
			best, ok = s.sent, true
		}
	}
	if !ok {
		return 0, false
	}
	return now.Sub(best), true
}

// RecordFreshness notes that the range's leader returned read index index
// for a request this replica sent at sent.
func (s *Shard) RecordFreshness(sent time.Time, index uint64) {
	s.fresh.record(sent, index)
}

// Staleness bounds how far this replica's current state may lag: every
// write acknowledged more than the returned duration ago is applied here.
// ok is false when the replica cannot bound it.
func (s *Shard) Staleness(now time.Time) (time.Duration, bool) {
	return s.fresh.staleness(s.fsm.AppliedIndex(), now)
}

// ConfirmReadIndex runs (or joins) a read-index round and returns the
// index without waiting for this replica to apply it: what a leader hands a
// follower that asks for one.
func (s *Shard) ConfirmReadIndex(ctx context.Context) (uint64, error) {
	return s.reads.wait(ctx)
}

// LatestFreshIndex is the index of the newest stamp, 0 when none.
func (s *Shard) LatestFreshIndex() uint64 {
	f := &s.fresh
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return 0
	}
	return f.stamps[(f.next+len(f.stamps)-1)%len(f.stamps)].index
}
