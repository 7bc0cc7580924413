package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc/metadata"
)

// Bounded reads are served by any replica that can show its state is
// recent. A replica shows it with freshness stamps (see shard.RecordFreshness):
// it notes the time on its own monotonic clock, asks the range leader for a
// read index, and once it has applied that index its state holds every write
// acknowledged before the noted time. No clock is compared across hosts.
//
// Stamps are refreshed in the background every FreshnessInterval, but only
// for ranges that served a weaker-level read within freshnessWindow, so idle
// ranges cost nothing; a bounded read that finds no recent enough stamp
// refreshes on demand (one round trip to the leader).
const (
	FreshnessInterval = 100 * time.Millisecond
	freshnessWindow   = 10 * time.Second
	refreshTimeout    = time.Second
)

// freshnessDemand tracks which ranges want background stamps. touch is on
// the path of every weaker read, so it is one atomic store once a range
// has been seen.
type freshnessDemand struct {
	want sync.Map // range id -> *atomic.Int64 (unix nanos of the last weaker read)
}

func (d *freshnessDemand) touch(id uint64, now time.Time) {
	if v, ok := d.want.Load(id); ok {
		v.(*atomic.Int64).Store(now.UnixNano())
		return
	}
	t := new(atomic.Int64)
	t.Store(now.UnixNano())
	d.want.Store(id, t)
}

func (d *freshnessDemand) wanted(now time.Time) map[uint64]bool {
	out := map[uint64]bool{}
	d.want.Range(func(k, v any) bool {
		if now.Sub(time.Unix(0, v.(*atomic.Int64).Load())) > freshnessWindow {
			d.want.Delete(k)
		} else {
			out[k.(uint64)] = true
		}
		return true
	})
	return out
}

// ReadIndex answers a peer's request for the read index of ranges this node
// leads.
func (n *Node) ReadIndex(ctx context.Context, req *kvpb.ReadIndexRequest) (*kvpb.ReadIndexResponse, error) {
	resp := &kvpb.ReadIndexResponse{Ranges: make([]*kvpb.RangeReadIndex, len(req.RangeIds))}
	var wg sync.WaitGroup
	for i, id := range req.RangeIds {
		out := &kvpb.RangeReadIndex{RangeId: id}
		resp.Ranges[i] = out
		s := n.shardByID(id)
		if s == nil {
			out.Error = fmt.Sprintf("range %d is not on node %s", id, n.cfg.NodeID)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, err := s.ConfirmReadIndex(ctx)
			if err != nil {
				out.Error = err.Error()
				return
			}
			out.Index = idx
		}()
	}
	wg.Wait()
	return resp, nil
}

func (n *Node) shardByID(id uint64) *shard.Shard {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.shards[id]
}

// freshnessLoop refreshes stamps of the ranges that want them.
func (n *Node) freshnessLoop() {
	defer n.wg.Done()
	t := time.NewTicker(FreshnessInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		want := n.fresh.wanted(time.Now())
		if len(want) == 0 {
			continue
		}
		var shards []*shard.Shard
		for _, s := range n.Shards() {
			if want[s.ID()] {
				shards = append(shards, s)
			}
		}
		ctx, cancel := context.WithTimeout(n.ctx, refreshTimeout)
		n.refresh(ctx, shards)
		cancel()
	}
}

// refresh earns new stamps for shards: one read-index request per leader,
// covering every range that leader leads; local ReadIndex for our own.
func (n *Node) refresh(ctx context.Context, shards []*shard.Shard) error {
	byLeader := map[string][]*shard.Shard{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, s := range shards {
		id, addr := s.Leader()
		switch {
		case addr == "":
			fail(fmt.Errorf("%w for range %d", ErrNoLeader, s.ID()))
		case id == n.cfg.NodeID:
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent := time.Now()
				idx, err := s.ConfirmReadIndex(ctx)
				if err != nil {
					fail(err)
					return
				}
				s.RecordFreshness(sent, idx)
			}()
		default:
			byLeader[addr] = append(byLeader[addr], s)
		}
	}
	for addr, group := range byLeader {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.refreshFrom(ctx, addr, group); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (n *Node) refreshFrom(ctx context.Context, leaderAddr string, group []*shard.Shard) error {
	conn, err := n.peer(leaderAddr)
	if err != nil {
		return err
	}
	req := &kvpb.ReadIndexRequest{}
	byID := map[uint64]*shard.Shard{}
	for _, s := range group {
		req.RangeIds = append(req.RangeIds, s.ID())
		byID[s.ID()] = s
	}
	ctx = metadata.AppendToOutgoingContext(ctx, rpctypes.ForwardedHeader, n.cfg.NodeID)
	sent := time.Now()
	resp, err := kvpb.NewInternalClient(conn).ReadIndex(ctx, req)
	if err != nil {
		return fmt.Errorf("read index from %s: %w", leaderAddr, err)
	}
	var errs []error
	for _, r := range resp.Ranges {
		s := byID[r.RangeId]
		if s == nil {
			continue
		}
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("range %d at %s: %s", r.RangeId, leaderAddr, r.Error))
			continue
		}
		s.RecordFreshness(sent, r.Index)
	}
	return errors.Join(errs...)
}

// boundedStaleness decides whether s may serve a read that accepts state up
// to maxStaleness old, refreshing its stamp on demand, and returns the
// staleness bound it can show.
func (n *Node) boundedStaleness(ctx context.Context, s *shard.Shard, maxStaleness time.Duration) (time.Duration, error) {
	n.fresh.touch(s.ID(), time.Now())
	if age, ok := s.Staleness(time.Now()); ok && age <= maxStaleness {
		return age, nil
	}
	rctx, cancel := context.WithTimeout(ctx, min(refreshTimeout, maxStaleness+refreshTimeout/2))
	defer cancel()
	if _, addr := s.Leader(); addr == "" {
		// A replica that has not heard from this term's leader yet (just
		// started, or an election under way) waits for one within the
		// refresh's time, rather than refusing a read it may well serve
		// a moment later.
		if _, _, err := s.WaitLeader(rctx); err != nil {
			return 0, fmt.Errorf("%w: range %d on %s cannot confirm its freshness: %w: %w", ErrStaleReplica, s.ID(), n.cfg.NodeID, ErrNoLeader, err)
		}
	}
	if err := n.refresh(rctx, []*shard.Shard{s}); err != nil {
		return 0, fmt.Errorf("%w: range %d on %s cannot confirm its freshness: %w", ErrStaleReplica, s.ID(), n.cfg.NodeID, err)
	}
	// The new stamp counts once this replica has applied its index; the
	// leader has already committed it, so the wait is short.
	if err := s.FSM().WaitApplied(rctx, s.LatestFreshIndex()); err != nil {
		return 0, fmt.Errorf("%w: range %d on %s has not applied the leader's read index in time: %w", ErrStaleReplica, s.ID(), n.cfg.NodeID, err)
	}
	age, ok := s.Staleness(time.Now())
	if ok && age <= maxStaleness {
		return age, nil
	}
	return 0, fmt.Errorf("%w: range %d on %s can show staleness %v, over max_staleness %v", ErrStaleReplica, s.ID(), n.cfg.NodeID, ageString(age, ok), maxStaleness)
}

func ageString(age time.Duration, ok bool) string {
	if !ok {
		return "unknown"
	}
	return age.Round(time.Millisecond).String()
}

// stalenessMS reports a replica's staleness bound for a read response:
// milliseconds, rounded up, or -1 when it cannot be bounded.
func stalenessMS(age time.Duration, ok bool) int64 {
	if !ok {
		return -1
	}
	return int64((age + time.Millisecond - 1) / time.Millisecond)
}
