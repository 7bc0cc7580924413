package replication_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/auth"
	"github.com/dialkv/dialkv/replication"
)

// TestAuthStore_ConcurrentMutationsFromEveryNodeAllLand has each node
// change the auth state at the same time: the compare-and-swap makes the
// losers retry on the winner's state, so every change lands once, and
// every node ends up holding the same state. Then, cut off from the meta
// range, a node's state goes stale once the revocation bound passes.
func TestAuthStore_ConcurrentMutationsFromEveryNodeAllLand(t *testing.T) {
	c := newTestCluster(t, 3)
	stores := make([]*replication.AuthStore, len(c.nodes))
	for i, n := range c.nodes {
		stores[i] = replication.NewAuthStore(n)
	}
	t.Cleanup(func() {
		for _, s := range stores {
			s.Close()
		}
	})
	for i, s := range stores {
		c.eventually(fmt.Sprintf("n%d confirms the (empty) auth state", i+1), 30*time.Second, func() bool {
			_, err := s.Check(time.Now())
			return err == nil
		})
	}

	// A cluster that never stored any auth state decides without
	// confirming it again, however long since (see AuthStore.Check):
	// nothing can have been turned on that it must honour. A node that
	// has not looked yet decides nothing.
	if _, err := stores[0].Check(time.Now().Add(10 * auth.DefaultRevocationBound)); err != nil {
		t.Fatalf("a never-configured node, long after its last confirmation: %v, want no refusal", err)
	}
	if _, err := replication.NewAuthStoreForTest(c.nodes[0]).Check(time.Now()); !errors.Is(err, auth.ErrAuthStale) {
		t.Fatalf("a node that has not read the auth state yet: %v, want ErrAuthStale", err)
	}
	// Such a node refuses every request, so /readyz must not call it ready
	// (a client that waited for /readyz got AUTH_STALE: CI run 33).
	if err := replication.NewAuthStoreForTest(c.nodes[0]).Ready(context.Background()); !errors.Is(err, auth.ErrAuthStale) {
		t.Fatalf("Ready before the first read of the auth state: %v, want ErrAuthStale", err)
	}
	if err := stores[0].Ready(context.Background()); err != nil {
		t.Fatalf("Ready once the auth state was read: %v", err)
	}

	const perNode = 3
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*perNode)
	for i, s := range stores {
		wg.Go(func() {
			for j := range perNode {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := s.Mutate(ctx, auth.Mutation{Kind: auth.MutAddRole, Role: fmt.Sprintf("r%d-%d", i, j)})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("n%d role %d: %w", i+1, j, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := []string{auth.RootRole}
	for i := range stores {
		for j := range perNode {
			want = append(want, fmt.Sprintf("r%d-%d", i, j))
		}
	}
	slices.Sort(want)
	wantRev := uint64(len(stores) * perNode)
	for i, s := range stores {
		c.eventually(fmt.Sprintf("n%d holds revision %d", i+1, wantRev), 10*time.Second, func() bool {
			return s.State().Revision() == wantRev
		})
		if got := s.State().RoleNames(); !slices.Equal(got, want) {
			t.Errorf("n%d holds roles %v, want %v", i+1, got, want)
		}
	}

	// A change that does nothing writes nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := stores[0].Mutate(ctx, auth.Mutation{Kind: auth.MutDisable})
	if err != nil || res.Changed || res.Revision != wantRev {
		t.Fatalf("disabling disabled auth: %+v, %v; want no change at revision %d", res, err, wantRev)
	}
	if _, err := stores[0].Mutate(ctx, auth.Mutation{Kind: auth.MutAddRole, Role: "r0-0"}); !errors.Is(err, auth.ErrRoleExists) {
		t.Fatalf("adding an existing role: %v, want ErrRoleExists", err)
	}

	// Alone, n1 cannot confirm its state: within the bound it still may
	// decide, past it it must not.
	c.stop(1)
	c.stop(2)
	stopped := time.Now()
	c.eventually("n1's auth state goes stale", auth.DefaultRevocationBound+5*time.Second, func() bool {
		_, err := stores[0].Check(time.Now())
		return errors.Is(err, auth.ErrAuthStale)
	})
	if since := time.Since(stopped); since < auth.DefaultRevocationBound/3 {
		t.Errorf("n1 went stale %v after losing its peers; it confirmed at most a bound/3 before", since)
	}
}
