package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc/codes"
)

func TestLease_GrantAttachRevoke(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if g.GetTtl() != 2 {
		t.Fatalf("granted ttl %d; want 1.5 s rounded up to 2", g.GetTtl())
	}
	for _, k := range []string{"a", "b"} {
		if _, err := c.Put(ctx, []byte(k), []byte("v"), WithLease(g.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := c.TimeToLive(ctx, g.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range ttl.GetKeys() {
		keys = append(keys, string(k))
	}
	if !slices.Equal(keys, []string{"a", "b"}) || ttl.GetGrantedTtl() != 2 {
		t.Fatalf("ttl %v; want keys a, b and granted 2", ttl)
	}
	list, err := c.Leases(ctx)
	if err != nil || len(list.GetLeases()) != 1 || list.GetLeases()[0].GetId() != g.GetId() {
		t.Fatalf("leases %v, %v; want the one granted", list, err)
	}
	rev, err := c.Revoke(ctx, g.GetId())
	if err != nil || rev.GetKeysDeleted() != 2 {
		t.Fatalf("revoke: %v, %v; want 2 keys deleted", rev, err)
	}
	if _, err := c.Get(ctx, []byte("a")); !IsNotFound(err) {
		t.Fatalf("get of a revoked lease's key: %v; want not found", err)
	}
	for name, err := range map[string]error{
		"ttl":            func() error { _, err := c.TimeToLive(ctx, g.GetId(), false); return err }(),
		"revoke again":   func() error { _, err := c.Revoke(ctx, g.GetId()); return err }(),
		"keepalive once": func() error { _, err := c.KeepAliveOnce(ctx, g.GetId()); return err }(),
		"put with it":    func() error { _, err := c.Put(ctx, []byte("c"), nil, WithLease(g.GetId())); return err }(),
	} {
		if !IsNotFound(err) || rpctypes.ReasonOf(err) != rpctypes.ReasonLeaseNotFound {
			t.Errorf("%s of an ended lease: %v; want LEASE_NOT_FOUND", name, err)
		}
	}
}

// TestLease_KeepAliveRenewsUntilTheLeaseEnds: renewals come a third of
// the TTL apart; the lease's end is the channel's last item, then it
// closes.
func TestLease_KeepAliveRenewsUntilTheLeaseEnds(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	ctx := testCtx(t)
	g, err := c.Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ch := c.KeepAlive(ctx, g.GetId())
	for i := range 3 {
		ka := <-ch
		if ka.Err != nil || ka.Resp.GetTtl() != 1 {
			t.Fatalf("renewal %d: %+v", i, ka)
		}
	}
	// Three renewals: at once, then two a third of a second apart.
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("three renewals in %v; want them a third of the 1 s TTL apart", d)
	}
	srv.Store.ExpireLease(g.GetId())
	var last LeaseKeepAlive
	for ka := range ch {
		last = ka
	}
	if !IsNotFound(last.Err) {
		t.Fatalf("the channel ended with %+v; want LEASE_NOT_FOUND", last)
	}
}

// TestLease_KeepAliveMovesToTheNextEndpoint: a broken stream, a renewal
// of unknown outcome or one refused for colliding (renewing twice is
// harmless) sends the keepalives to the next endpoint instead of ending
// them.
func TestLease_KeepAliveMovesToTheNextEndpoint(t *testing.T) {
	for _, c := range []struct {
		name string
		fail error
	}{
		{"broken stream", brokenStream},
		{"unknown outcome", clienttest.Indeterminate()},
		{"refused, colliding with other renewals", rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "keepalives kept colliding", nil)},
	} {
		t.Run(c.name, func(t *testing.T) { keepAliveMovesOn(t, c.fail) })
	}
}

func keepAliveMovesOn(t *testing.T, fail error) {
	st := clienttest.NewStore()
	srv1 := clienttest.Start(t, clienttest.WithStore(st))
	srv2 := clienttest.Start(t, clienttest.WithStore(st))
	srv1.Fail(clienttest.MethodLeaseKeepAlive, 1, fail)
	c := newTestClient(t, Config{Endpoints: []string{srv1.Addr, srv2.Addr}})
	ctx := testCtx(t)
	g, err := c.Grant(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	kctx, cancel := context.WithCancel(ctx)
	ch := c.KeepAlive(kctx, g.GetId())
	if ka := <-ch; ka.Err != nil || ka.Resp.GetId() != g.GetId() {
		t.Fatalf("first renewal: %+v", ka)
	}
	if srv2.Calls(clienttest.MethodLeaseKeepAlive) != 1 {
		t.Fatalf("renewals on n2: %d; want the one after n1's stream broke", srv2.Calls(clienttest.MethodLeaseKeepAlive))
	}
	cancel()
	var last LeaseKeepAlive
	for ka := range ch {
		last = ka
	}
	if !errors.Is(last.Err, context.Canceled) {
		t.Fatalf("the channel ended with %+v; want the context's cancellation", last)
	}
}

func TestLease_GrantIsNotRetriedAfterAnUnknownOutcome(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Fail(clienttest.MethodLeaseGrant, 1, clienttest.Indeterminate())
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	if _, err := c.Grant(testCtx(t), time.Second); !IsIndeterminate(err) {
		t.Fatalf("grant: %v; want indeterminate", err)
	}
	if n := srv.Calls(clienttest.MethodLeaseGrant); n != 1 {
		t.Fatalf("%d grants sent; want 1", n)
	}
}
