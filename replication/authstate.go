package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// metaAuthKey holds the cluster's encoded auth.State in the meta range,
// as version(revision, 0) + State.Encode(). It shares no prefix with the
// descriptor keys (meta.go), and no user request reaches the meta range:
// routing never sends a key or a scan to range 1.
const metaAuthKey = "auth/state"

// maxAuthCASAttempts bounds the retries of a mutation that lost a race
// with another node's.
const maxAuthCASAttempts = 8

// ErrAuthContention is a mutation that lost the race for the auth state
// maxAuthCASAttempts times in a row. Nothing was changed; retry.
var ErrAuthContention = errors.New("replication: auth state changed concurrently; nothing changed, try again")

// AuthStore keeps this node's copy of the cluster's auth state, refreshed
// from the meta range often enough that Check can vouch for it within the
// state's revocation bound, and makes changes to it.
//
// A change is a compare-and-swap on the stored state: read it
// linearizably, apply the mutation, and write the result with
// OpPutIfNewer under version (new revision, 0). Every mutation adds one to
// the revision, so the write lands only if no other state of that
// revision was stored first, that is, only if the state read is still
// the stored one: comparing revisions is comparing the bytes, since a
// stored revision is never overwritten by another of the same number.
type AuthStore struct {
	n     *Node
	log   *slog.Logger
	fresh auth.Freshness

	mu   sync.Mutex
	held *auth.State // never nil; only moves to higher revisions

	// noneStored: this node's last successful read found no auth state
	// in the meta range (see Check). False until the first read, so a
	// restarted node decides nothing before it has looked.
	noneStored atomic.Bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// emptyAuthState is what a node holds while the meta range has no auth
// state: disabled, revision 0. Its key signs nothing (a disabled state
// issues no tokens) and it is never stored: the first mutation stores a
// state with a fresh random key.
func emptyAuthState() *auth.State {
	s, _ := auth.NewState(make([]byte, auth.SigningKeyBytes))
	return s
}

// NewAuthStore starts keeping n's auth state; Close stops it.
func NewAuthStore(n *Node) *AuthStore {
	a := &AuthStore{n: n, log: n.log.With("component", "auth"), held: emptyAuthState(), stop: make(chan struct{})}
	a.wg.Add(1)
	go a.refreshLoop()
	return a
}

// Close stops the refresh loop.
func (a *AuthStore) Close() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.wg.Wait()
}

// State returns the state this node holds, current or not.
func (a *AuthStore) State() *auth.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held
}

// Check returns the held state and whether this node may decide requests
// with it at now: auth.ErrAuthStale when it was not confirmed current
// within its revocation bound. A disabled state is checked too, since auth
// may have been enabled since, with one exception: a node whose last read
// of the meta range found no auth state at all (no user, role or setting
// was ever stored) and that holds none decides without confirming it
// again. A cluster that does not use
// auth must not lose its stale reads on a cut-off replica, nor every
// request while the meta range elects a leader, to a check that only
// matters once auth is set up. The price, written in the README: the very
// first auth set-up reaches a node cut off since before it only when the
// node reconnects, not within the bound.
func (a *AuthStore) Check(now time.Time) (*auth.State, error) {
	st := a.State()
	if st.Revision() == 0 && a.noneStored.Load() {
		return st, nil
	}
	return st, a.fresh.Check(st, now)
}

// Ready is nil once the node may decide requests with the auth state it
// holds (Check), else why not: a node that has not yet read the state
// from the meta range refuses every request with AUTH_STALE, so it is not
// ready to serve, whether or not the cluster uses auth.
func (a *AuthStore) Ready(context.Context) error {
	if _, err := a.Check(time.Now()); err != nil {
		return fmt.Errorf("auth state: %w", err)
	}
	return nil
}

// install makes st the held state if it is newer.
func (a *AuthStore) install(st *auth.State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.Revision() > a.held.Revision() {
		a.held = st
	}
}

// read returns the stored state, linearizably; found is false when none
// was ever stored.
func (a *AuthStore) read(ctx context.Context) (st *auth.State, found bool, err error) {
	resp, err := a.n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte(metaAuthKey)})
	if err != nil {
		return nil, false, fmt.Errorf("replication: read auth state: %w", err)
	}
	for _, kv := range resp.Kvs {
		if !bytes.Equal(kv.Key, []byte(metaAuthKey)) {
			continue
		}
		rev, _, body, ok := parseVersion(kv.Value)
		if !ok {
			return nil, false, fmt.Errorf("replication: stored auth state: %w: no version", auth.ErrCorrupt)
		}
		st, err := auth.DecodeState(body)
		if err != nil {
			return nil, false, fmt.Errorf("replication: stored auth state: %w", err)
		}
		if st.Revision() != rev {
			return nil, false, fmt.Errorf("replication: stored auth state: %w: revision %d under version %d", auth.ErrCorrupt, st.Revision(), rev)
		}
		return st, true, nil
	}
	return emptyAuthState(), false, nil
}

// Refresh reads the stored state, holds it, and records the confirmation.
func (a *AuthStore) Refresh(ctx context.Context) error {
	sent := time.Now()
	st, found, err := a.read(ctx)
	if err != nil {
		return err
	}
	a.noneStored.Store(!found)
	a.install(st)
	return a.fresh.Confirm(sent, st.Revision(), a.State())
}

// refreshLoop confirms the state at least every third of its bound, so a
// healthy node never goes stale, and sooner after a failure.
func (a *AuthStore) refreshLoop() {
	defer a.wg.Done()
	for i := 0; ; i++ {
		period := a.State().RevocationBound() / 3
		ctx, cancel := context.WithTimeout(a.n.ctx, period)
		err := a.Refresh(ctx)
		cancel()
		wait := period
		if err != nil {
			wait = min(period, 200*time.Millisecond)
			if i%10 == 0 {
				a.log.Info("could not confirm the auth state; will retry", "err", err)
			}
		}
		select {
		case <-a.stop:
			return
		case <-a.n.stop:
			return
		case <-time.After(wait):
		}
	}
}

// Mutate applies m to the stored state (see AuthStore for the
// compare-and-swap) and holds the result at once. m must carry any
// password hash already: hashing is random and happens before the swap.
func (a *AuthStore) Mutate(ctx context.Context, m auth.Mutation) (auth.Result, error) {
	var key []byte // made once, before any swap, when no state exists yet
	for attempt := 0; attempt < maxAuthCASAttempts; attempt++ {
		sent := time.Now()
		cur, found, err := a.read(ctx)
		if err != nil {
			return auth.Result{}, err
		}
		if !found {
			if key == nil {
				if key, err = auth.NewSigningKey(); err != nil {
					return auth.Result{}, err
				}
			}
			if cur, err = auth.NewState(key); err != nil {
				return auth.Result{}, err
			}
		}
		next, res, err := m.Apply(cur)
		if err != nil {
			return res, err
		}
		if !res.Changed {
			if found {
				a.install(cur)
			}
			return res, nil
		}
		value := append(version(next.Revision(), 0), next.Encode()...)
		put, err := a.n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: []byte(metaAuthKey), Value: value})
		if err != nil {
			// The write may or may not have landed: say so rather than
			// retry a mutation that may have been applied.
			return auth.Result{}, fmt.Errorf("replication: write auth state: %w", err)
		}
		if put.Written {
			a.install(next)
			if err := a.fresh.Confirm(sent, next.Revision(), a.State()); err != nil {
				a.log.Debug("auth state newer than the one just written", "err", err)
			}
			a.log.Info("auth state changed", "mutation", m.Kind, "user", m.User, "role", m.Role, "revision", next.Revision())
			return res, nil
		}
	}
	return auth.Result{}, fmt.Errorf("%w (%d attempts)", ErrAuthContention, maxAuthCASAttempts)
}
