package replication

import (
	"context"
	"fmt"
	"sync"
)

// leaseWrites are the writes with a lease that this node is proposing as
// a range's leader, from before their lease check until their entries
// can no longer be appended in the leader's term (shard.ProposeSettled).
//
// A lease's revoke vouches for a range holding none of its keys from a
// read index on the range's leader (or a majority of sleeping voters that
// includes the leader they slept under). A put whose lease check passed
// just before the revoke committed in the meta range could otherwise be
// appended after that read index and leave a key the revoke never saw.
// So each node answering a revoke first drains its writes with the lease:
// it fences them (a write that has not proposed yet never will: it fails
// with LEASE_NOT_FOUND, which is true, as the lease's end has committed)
// and waits for the proposals already made to settle. That covers every
// such put:
//   - one proposed by this node in its current term settles before the
//     read index is taken, so its entry is below it;
//   - one appended by an earlier leader commits before the current
//     leader's term-start entry, which the read index covers, or never;
//   - one whose check begins after the drain starts runs after the
//     revoke committed in the meta range, and finds the lease ended.
//
// A drain waits for Raft, never for a request's other waits (a lock
// ahead of it, a forward). Cross-range transactions check their leases
// again once every lock is in place (Txn): a lock holding a write with the
// lease keeps a range from being vouched for (RangeFSM.LeaseLocked).
type leaseWrites struct {
	mu      sync.Mutex
	pending map[uint64]map[*leaseWrite]struct{}
	drains  int // drains waiting (tests)
}

// leaseWrite is one request's writes with leases. Its fields are guarded
// by w.mu.
type leaseWrite struct {
	w        *leaseWrites
	ids      []uint64
	released bool // the request is done: it proposes nothing more
	fenced   bool // a drain began: it proposes nothing more
	inflight int  // proposals not settled yet
	idle     chan struct{}
}

// begin registers a request about to check leases ids and propose writes
// with them. The caller must release it; no ids: nothing to track.
func (w *leaseWrites) begin(ids ...uint64) *leaseWrite {
	if len(ids) == 0 {
		return nil
	}
	lw := &leaseWrite{w: w, ids: ids}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = map[uint64]map[*leaseWrite]struct{}{}
	}
	for _, id := range ids {
		m := w.pending[id]
		if m == nil {
			m = map[*leaseWrite]struct{}{}
			w.pending[id] = m
		}
		m[lw] = struct{}{}
	}
	return lw
}

// propose counts a proposal about to be made, until the returned settle
// is called (nil: nothing to count); ok is false when a drain fenced the
// request (one of its leases has ended: it must not propose).
func (lw *leaseWrite) propose() (settle func(), ok bool) {
	if lw == nil {
		return nil, true
	}
	w := lw.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw.fenced || lw.released {
		return nil, false
	}
	lw.inflight++
	var once sync.Once
	return func() { once.Do(lw.settle) }, true
}

// endedErr is the answer to a write fenced before it proposed.
func (lw *leaseWrite) endedErr() error {
	if len(lw.ids) == 1 {
		return fmt.Errorf("%w: lease %d ended before the write was proposed", ErrLeaseNotFound, lw.ids[0])
	}
	return fmt.Errorf("%w: one of leases %v ended before the write was proposed", ErrLeaseNotFound, lw.ids)
}

func (lw *leaseWrite) settle() {
	w := lw.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw.inflight--; lw.inflight == 0 {
		if lw.idle != nil {
			close(lw.idle)
			lw.idle = nil
		}
		if lw.released {
			w.forget(lw)
		}
	}
}

// release ends the request; its proposals count until they settle.
func (lw *leaseWrite) release() {
	if lw == nil {
		return
	}
	w := lw.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw.released {
		return
	}
	lw.released = true
	if lw.inflight == 0 {
		w.forget(lw)
	}
}

func (w *leaseWrites) forget(lw *leaseWrite) {
	for _, id := range lw.ids {
		if m := w.pending[id]; m != nil {
			delete(m, lw)
			if len(m) == 0 {
				delete(w.pending, id)
			}
		}
	}
}

// drain fences every request with lease id and waits until the proposals
// they made have settled. Call it only once the lease's end has
// committed.
func (w *leaseWrites) drain(ctx context.Context, id uint64) error {
	w.mu.Lock()
	var wait []chan struct{}
	for lw := range w.pending[id] {
		lw.fenced = true
		if lw.inflight > 0 {
			if lw.idle == nil {
				lw.idle = make(chan struct{})
			}
			wait = append(wait, lw.idle)
		}
	}
	if len(wait) > 0 {
		w.drains++
		defer func() {
			w.mu.Lock()
			w.drains--
			w.mu.Unlock()
		}()
	}
	w.mu.Unlock()
	for _, idle := range wait {
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// pendingFor is how many requests with lease id are pending (tests).
func (w *leaseWrites) pendingFor(id uint64) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending[id])
}

// waiting is how many drains wait (tests).
func (w *leaseWrites) waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.drains
}
