package auth

import (
	"fmt"
	"sync"
	"time"
)

// Freshness bounds how long a node honours permissions that may have been
// revoked. The node confirms its auth state by asking the meta range's
// leader for the current auth revision (a linearizable read); when the
// state it holds is at least that revision, it was current when the
// question was sent. From then on it may honour that state for the state's
// RevocationBound and no longer, so a revocation takes effect everywhere
// within the bound even on a node partitioned from the leader, which starts
// refusing instead.
//
// The zero value has never been confirmed and refuses everything. Times
// must come from the local monotonic clock (time.Now), never from another
// host.
type Freshness struct {
	mu sync.Mutex
	// confirmed is when the newest successful confirmation was sent; zero
	// until the first.
	confirmed time.Time
	// revision is the leader's auth revision at that confirmation.
	revision uint64
}

// Confirm records that a question sent to the meta range's leader at sent
// was answered with auth revision leaderRevision, while this node held
// state held. If held is older than the leader's revision the node is not
// current yet (it must apply the newer state and confirm again) and
// Confirm returns ErrAuthStale.
func (f *Freshness) Confirm(sent time.Time, leaderRevision uint64, held *State) error {
	if held.Revision() < leaderRevision {
		return fmt.Errorf("%w: holding auth revision %d, the leader has %d", ErrAuthStale, held.Revision(), leaderRevision)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Answers may arrive out of order; an older question proves less.
	if sent.After(f.confirmed) {
		f.confirmed, f.revision = sent, leaderRevision
	}
	return nil
}

// ConfirmedAt returns when the newest confirmation was sent and the
// revision it confirmed; ok is false before the first.
func (f *Freshness) ConfirmedAt() (at time.Time, revision uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.confirmed, f.revision, !f.confirmed.IsZero()
}

// Check returns nil if a node holding state held, confirmed as recorded,
// may honour its permissions at now: the confirmed revision is one held
// includes and now - confirmation <= held's RevocationBound. Otherwise it
// returns ErrAuthStale, and the server should refuse the request
// (UNAVAILABLE) rather than decide it on state that may be out of date.
func (f *Freshness) Check(held *State, now time.Time) error {
	at, rev, ok := f.ConfirmedAt()
	switch {
	case !ok:
		return fmt.Errorf("%w: never confirmed", ErrAuthStale)
	case held.Revision() < rev:
		// Cannot happen if held only moves forward; refuse rather than trust.
		return fmt.Errorf("%w: holding auth revision %d, confirmed %d", ErrAuthStale, held.Revision(), rev)
	}
	if age, bound := now.Sub(at), held.RevocationBound(); age > bound {
		return fmt.Errorf("%w: last confirmed %s ago, bound %s", ErrAuthStale, age.Round(time.Millisecond), bound)
	}
	return nil
}
