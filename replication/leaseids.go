package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// Lease ids come from the meta range's counter lease/next, which holds the
// highest id handed out or reserved. Releases before this one took each
// id with an OpIncrement, a Raft write of its own before the grant's
// write of the record; a grant cost two rounds, one after the other. The
// meta leader now reserves leaseIDBlock ids at a time with a
// compare-and-swap of the counter, and each grant writes only its record.
//
// The counter keeps its meaning, so nothing changes on disk or between
// releases: a node of the previous release leading the meta range
// increments past every block reserved, and the sweep's rule that a
// lease id at most the counter whose record is gone has ended still
// holds (an id is reserved before its record is written). Ids of a block
// that a node restarts or crashes with are never used: gaps, not
// repeats. A block outlives leadership, since nobody else can hand out
// its ids; its holder uses them only while it leads the meta range,
// because only the leader grants.

const (
	leaseIDBlock = 128
	// maxLeaseID keeps ids positive int64s on the wire, as etcd's are.
	maxLeaseID = 1<<63 - 1
	// leaseIDAttempts bounds the reservations one grant may make and
	// lose (one is lost only when another leader's write to the counter
	// got there first).
	leaseIDAttempts = 8
)

var errLeaseIDsExhausted = errors.New("replication: lease ids exhausted")

// leaseIDs is one node's reserved, unused lease ids: next..end-1.
type leaseIDs struct {
	mu        sync.Mutex
	next, end uint64
	// reserving is closed when the reservation in flight ends; nil when
	// none is. Grants that find the block empty wait for it instead of
	// reserving blocks of their own.
	reserving chan struct{}
}

// take hands out a lease id reserved on the meta range s, which this node
// leads, reserving a new block when none is left. Waiting for another
// grant's reservation is bounded by ctx (a request's deadline); only
// reservations this grant made and lost count against leaseIDAttempts.
func (a *leaseIDs) take(ctx context.Context, s *shard.Shard) (uint64, error) {
	lost := 0
	for range 1 << 20 { // ends with an id, an error or ctx
		a.mu.Lock()
		if a.next < a.end {
			id := a.next
			a.next++
			a.mu.Unlock()
			return id, nil
		}
		if wait := a.reserving; wait != nil {
			a.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		done := make(chan struct{})
		a.reserving = done
		a.mu.Unlock()

		first, end, err := reserveLeaseIDs(ctx, s)
		var id uint64
		a.mu.Lock()
		if err == nil && end > first {
			// The reserver takes the block's first id itself: grants that
			// waited meanwhile must not leave it with none.
			id, a.next, a.end = first, first+1, end
		}
		a.reserving = nil
		a.mu.Unlock()
		close(done)
		switch {
		case err != nil:
			return 0, err
		case id != 0:
			return id, nil
		}
		if lost++; lost >= leaseIDAttempts {
			break
		}
	}
	return 0, fmt.Errorf("replication: no lease id after %d reservations lost to other leaders; the meta range's leadership may be moving", lost)
}

// reserveLeaseIDs moves lease/next a block on and returns the ids it
// passed over, [first, end). A compare that failed (another leader's
// increment committed first) returns an empty block and no error: the
// caller tries again on a fresh read.
func reserveLeaseIDs(ctx context.Context, s *shard.Shard) (first, end uint64, err error) {
	// Read the counter as committed, so that the swap normally holds.
	if _, err := s.ReadIndex(ctx); err != nil {
		return 0, 0, err
	}
	cur, _, found, _, err := s.FSM().Get([]byte(metaLeaseNext))
	if err != nil {
		return 0, 0, err
	}
	var last uint64
	if found {
		if len(cur) != 8 {
			return 0, 0, fmt.Errorf("replication: meta key %s holds %d bytes, want 8", metaLeaseNext, len(cur))
		}
		last = binary.BigEndian.Uint64(cur)
	}
	if last > maxLeaseID-leaseIDBlock {
		return 0, 0, fmt.Errorf("%w: the last id handed out is %d", errLeaseIDsExhausted, last)
	}
	cmd := &raftstore.Command{
		Op: raftstore.OpCompareAndSwap, Key: []byte(metaLeaseNext),
		Value:    binary.BigEndian.AppendUint64(nil, last+leaseIDBlock),
		Expected: cur, ExpectMissing: !found,
	}
	res, err := s.Propose(ctx, cmd)
	if errors.Is(err, shard.ErrCompareFailed) || (err == nil && errors.Is(res.Err, raftstore.ErrCompareFailed)) {
		return 0, 0, nil
	}
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return 0, 0, fmt.Errorf("replication: reserving lease ids: %w", err)
	}
	return last + 1, last + leaseIDBlock + 1, nil
}
