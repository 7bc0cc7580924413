package replication

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/shard"
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
	led := slices.DeleteFunc(n.Shards(), func(s *shard.Shard) bool { return s.Asleep() || !s.IsLeader() })
	res.Led = len(led)
	for _, s := range led {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.StepDown(ctx); err != nil {
				n.log.Debug("drain: leadership not handed over", "range", s.ID(), "err", err)
				return
			}
			moved.Add(1)
		})
	}
	wg.Wait()
	res.Transferred, res.Elapsed = int(moved.Load()), time.Since(start)
	return res
}
