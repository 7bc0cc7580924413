package replication

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DrainResult says what DrainLeadership did.
type DrainResult struct {
	Led         int // awake ranges this node led when the drain began
	Transferred int // of those, handed to another replica
	Elapsed     time.Duration
}

// DrainLeadership hands every awake range this node leads to another of
// its replicas, before a planned stop (kvd on SIGTERM). A node that just
// stops leaves its ranges without a leader until a follower's heartbeat
// timeout passes and an election ends, 1-2 s with the default timing,
// and every write to them waits that long; a handed-over range has a new
// leader in a round trip or two. It returns when every transfer has ended
// or ctx is done; a range whose transfer failed (no other voter, a
// follower too far behind) is left to the election the stop will cause.
// Sleeping ranges are left asleep: waking them would cost more than
// their next wake's election.
func (n *Node) DrainLeadership(ctx context.Context) DrainResult {
	start := time.Now()
	var res DrainResult
	var moved atomic.Int64
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, s := range n.Shards() {
		if s.Asleep() || !s.IsLeader() {
			continue
		}
		res.Led++
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			res.Transferred, res.Elapsed = int(moved.Load()), time.Since(start)
			return res
		}
		wg.Go(func() {
			defer func() { <-sem }()
			done := make(chan error, 1)
			go func() { done <- s.StepDown() }()
			select {
			case err := <-done:
				if err != nil {
					n.log.Debug("drain: leadership not handed over", "range", s.ID(), "err", err)
					return
				}
				moved.Add(1)
			case <-ctx.Done():
			}
		})
	}
	wg.Wait()
	res.Transferred, res.Elapsed = int(moved.Load()), time.Since(start)
	return res
}
