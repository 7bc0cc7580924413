package client

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
)

// twoRanges starts fakes n1 and n2 over one store split at "m": n1 leads
// ["", "m"), n2 leads ["m", ∞), both replicate both.
func twoRanges(t *testing.T) (st *clienttest.Store, a, b *clienttest.Server) {
	t.Helper()
	st = clienttest.NewStore()
	a = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	b = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	st.SetNodes(a.Node(), b.Node())
	st.SetRanges(
		&kvpb.RangeDescriptor{Id: 1, End: []byte("m"), Generation: 1, Replicas: []string{"n1", "n2"}, Leader: "n1"},
		&kvpb.RangeDescriptor{Id: 2, Start: []byte("m"), Generation: 1, Replicas: []string{"n1", "n2"}, Leader: "n2"},
	)
	return st, a, b
}

func kvCalls(s *clienttest.Server) int {
	n := 0
	for _, m := range []string{clienttest.MethodPut, clienttest.MethodGet, clienttest.MethodDelete, clienttest.MethodCAS, clienttest.MethodScan} {
		n += s.Calls(m)
	}
	return n
}

func TestRouting_SendsEachKeyToItsRangeLeader(t *testing.T) {
	st, a, b := twoRanges(t)
	st.Put([]byte("x"), []byte("1"))
	// Only n1 is configured: everything n2 gets, routing sent it.
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	ctx := testCtx(t)

	tests := []struct {
		name string
		do   func() error
		want *clienttest.Server
	}{
		{"put left", func() error { _, err := c.Put(ctx, []byte("k"), []byte("v")); return err }, a},
		{"put right", func() error { _, err := c.Put(ctx, []byte("y"), []byte("v")); return err }, b},
		{"put at the boundary", func() error { _, err := c.Put(ctx, []byte("m"), []byte("v")); return err }, b},
		{"linearizable get", func() error { _, err := c.Get(ctx, []byte("x")); return err }, b},
		{"delete", func() error { _, err := c.Delete(ctx, []byte("a")); return err }, a},
		{"cas", func() error {
			_, err := c.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte("z"), NewValue: []byte("v"), ExpectMissing: true})
			return err
		}, b},
		{"scan from a start key", func() error { _, err := c.Scan(ctx, &kvpb.ScanRequest{Start: []byte("q")}); return err }, b},
		{"scan by prefix", func() error { _, err := c.Scan(ctx, &kvpb.ScanRequest{Prefix: []byte("c")}); return err }, a},
		{"scan of everything", func() error { _, err := c.Scan(ctx, nil); return err }, a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeA, beforeB := kvCalls(a), kvCalls(b)
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			gotA, gotB := kvCalls(a)-beforeA, kvCalls(b)-beforeB
			if wantA := map[bool]int{true: 1}[tt.want == a]; gotA != wantA || gotB != 1-wantA {
				t.Fatalf("n1 got %d calls and n2 %d, want the leader %s to get the only one", gotA, gotB, tt.want.ID)
			}
		})
	}
	if got := a.Calls(clienttest.MethodRanges) + b.Calls(clienttest.MethodRanges); got != 1 {
		t.Fatalf("routing table fetched %d times, want once (cached)", got)
	}
	if got := c.Endpoints(); !slices.Equal(got, []string{a.Addr}) {
		t.Fatalf("Endpoints() = %v: routed addresses must not join the failover order", got)
	}
}

func TestRouting_RefreshesAfterAStaleRoute(t *testing.T) {
	wrongRange := rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonWrongRange, "wrong range", nil)
	tests := []struct {
		name   string
		method string
		fail   error
	}{
		{"put wrong range", clienttest.MethodPut, wrongRange},
		{"put not leader", clienttest.MethodPut, clienttest.NotLeader("")},
		{"get wrong range", clienttest.MethodGet, wrongRange},
		{"cas wrong range", clienttest.MethodCAS, wrongRange},
		{"cas not leader", clienttest.MethodCAS, clienttest.NotLeader("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, a, b := twoRanges(t)
			st.Put([]byte("x"), []byte("v"))
			c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
			do := func(key string) error {
				ctx := testCtx(t)
				var err error
				switch tt.method {
				case clienttest.MethodPut:
					_, err = c.Put(ctx, []byte(key), []byte("v"))
				case clienttest.MethodGet:
					_, err = c.Get(ctx, []byte("x"))
				case clienttest.MethodCAS:
					_, err = c.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte(key), NewValue: []byte("v"), ExpectMissing: true})
				}
				return err
			}
			// n2 leads "x" in the table but refuses: the attempt falls back
			// to the sticky endpoint n1, which (playing a forwarding node)
			// serves it.
			b.Fail(tt.method, 1, tt.fail)
			if err := do("x1"); err != nil {
				t.Fatalf("%s after a stale route: %v", tt.method, err)
			}
			if a.Calls(tt.method) != 1 || b.Calls(tt.method) != 1 {
				t.Fatalf("n1 got %d calls and n2 %d, want one each (routed, then sticky)", a.Calls(tt.method), b.Calls(tt.method))
			}
			// Leadership moved meanwhile; the next request fetches the
			// table again and follows it.
			st.SetLeader(2, "n1")
			if err := do("x2"); err != nil {
				t.Fatal(err)
			}
			if got := a.Calls(clienttest.MethodRanges) + b.Calls(clienttest.MethodRanges); got != 2 {
				t.Fatalf("routing table fetched %d times, want 2 (refreshed after the error)", got)
			}
			if a.Calls(tt.method) != 2 || b.Calls(tt.method) != 1 {
				t.Fatalf("after the refresh n1 got %d calls and n2 %d, want the new leader n1", a.Calls(tt.method), b.Calls(tt.method))
			}
		})
	}
}

func TestRouting_UnreachableRoutedNodeFallsBack(t *testing.T) {
	for _, m := range []string{clienttest.MethodPut, clienttest.MethodCAS, clienttest.MethodGet} {
		t.Run(m, func(t *testing.T) {
			st := clienttest.NewStore()
			a := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
			st.Put([]byte("k"), []byte("v"))
			st.SetNodes(a.Node(), &kvpb.NodeInfo{Id: "n2", GrpcAddr: clienttest.ClosedAddr(t)})
			st.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n1", "n2"}, Leader: "n2"})
			c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
			// The CAS may be retried: a refused connection proves it was
			// never sent.
			if err := call(testCtx(t), c, m); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			if got := a.Calls(m); got != 1 {
				t.Fatalf("the sticky endpoint got %d calls, want 1", got)
			}
			// The dead node is avoided from now on, even by a fresh table.
			st.Put([]byte("k"), []byte("v"))
			if err := call(testCtx(t), c, m); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			if got := a.Calls(m); got != 2 {
				t.Fatalf("the sticky endpoint got %d calls, want 2", got)
			}
		})
	}
}

func TestRouting_KeepsTheRetryPolicy(t *testing.T) {
	_, a, b := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	b.Fail(clienttest.MethodCAS, 1, clienttest.Indeterminate())
	_, err := c.CompareAndSwap(testCtx(t), &kvpb.CompareAndSwapRequest{Key: []byte("x"), NewValue: []byte("v"), ExpectMissing: true})
	if !IsIndeterminate(err) {
		t.Fatalf("err = %v, want indeterminate", err)
	}
	if got := a.Calls(clienttest.MethodCAS) + b.Calls(clienttest.MethodCAS); got != 1 {
		t.Fatalf("CAS sent %d times after an indeterminate answer, want 1", got)
	}
}

func TestRouting_WeakReadsGoToTheNearestReplica(t *testing.T) {
	st := clienttest.NewStore()
	srv := map[string]*clienttest.Server{}
	var infos []*kvpb.NodeInfo
	// n1 leads; n1..n3 are replicas in zones a, b, c of region eu; n4
	// holds no replica.
	for i, zone := range []string{"a", "b", "c", "a"} {
		id := fmt.Sprintf("n%d", i+1)
		srv[id] = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID(id))
		info := srv[id].Node()
		info.Locality = "region=eu,zone=" + zone
		infos = append(infos, info)
	}
	st.SetNodes(infos...)
	st.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"})
	st.Put([]byte("k"), []byte("v"))
	levels := []ReadOption{
		WithConsistency(kvpb.Consistency_CONSISTENCY_STALE),
		WithConsistency(kvpb.Consistency_CONSISTENCY_SESSION),
		func(s *readSettings) {
			WithConsistency(kvpb.Consistency_CONSISTENCY_BOUNDED)(s)
			WithMaxStaleness(time.Second)(s)
		},
	}

	tests := []struct {
		name      string
		endpoints []string
		locality  string
		want      map[string]int // gets per node out of 12
		why       string         // in the explanation's chosen_because
	}{
		{name: "the first endpoint, the leader, holds a replica", endpoints: []string{"n1"},
			want: map[string]int{"n1": 12}, why: "the first endpoint given"},
		{name: "the first endpoint, a follower, holds a replica", endpoints: []string{"n2", "n1"},
			want: map[string]int{"n2": 12}, why: "the first endpoint given"},
		{name: "the first endpoint that holds a replica", endpoints: []string{"n4", "n3"},
			want: map[string]int{"n3": 12}, why: "the first endpoint given that holds a replica"},
		{name: "no endpoint holds one: the followers in turn", endpoints: []string{"n4"},
			want: map[string]int{"n2": 6, "n3": 6}, why: "a follower, in turn"},
		{name: "the replica in the client's zone, whatever the endpoints", endpoints: []string{"n1"}, locality: "region=eu,zone=c",
			want: map[string]int{"n3": 12}, why: "nearest replica by locality zone=c"},
		{name: "a locality shared only to the region falls back on the endpoints", endpoints: []string{"n4", "n2"}, locality: "region=eu,zone=z",
			want: map[string]int{"n2": 12}, why: "nearest replica by locality region=eu"},
		{name: "a locality shared by none: the followers in turn", endpoints: []string{"n4"}, locality: "region=us,zone=a",
			want: map[string]int{"n2": 6, "n3": 6}, why: "no replica shares the client's locality"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var eps []string
			for _, id := range tt.endpoints {
				eps = append(eps, srv[id].Addr)
			}
			c := newTestClient(t, Config{Endpoints: eps, Locality: tt.locality})
			before := map[string]int{}
			for id, s := range srv {
				before[id] = s.Calls(clienttest.MethodGet)
			}
			for i := range 12 {
				resp, err := c.Get(testCtx(t), []byte("k"), levels[i%3], WithExplain())
				if err != nil {
					t.Fatal(err)
				}
				got := resp.GetHeader().GetExplain().GetChosenBecause()
				if !strings.Contains(got, tt.why) || !strings.HasSuffix(got, "; the node asked holds a replica") {
					t.Fatalf("chosen_because = %q, want it to say %q, then the server's reason", got, tt.why)
				}
			}
			for id, s := range srv {
				if got := s.Calls(clienttest.MethodGet) - before[id]; got != tt.want[id] {
					t.Errorf("%s served %d gets, want %d", id, got, tt.want[id])
				}
			}
			// A linearizable read still goes to the leader.
			before1 := srv["n1"].Calls(clienttest.MethodGet)
			if _, err := c.Get(testCtx(t), []byte("k")); err != nil {
				t.Fatal(err)
			}
			if got := srv["n1"].Calls(clienttest.MethodGet) - before1; got != 1 {
				t.Fatalf("linearizable get reached the leader %d times, want 1", got)
			}
		})
	}
}

func TestRouting_WeakReadsSkipRemovedReplicas(t *testing.T) {
	st := clienttest.NewStore()
	a := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	b := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	d := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n3"))
	e := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n4"))
	st.SetNodes(a.Node(), b.Node(), e.Node(), &kvpb.NodeInfo{Id: "n3", GrpcAddr: d.Addr, State: clienttest.StateRemoved})
	st.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"})
	st.Put([]byte("k"), []byte("v"))
	// n4 holds no replica: the followers serve in turn, and n3 is removed.
	c := newTestClient(t, Config{Endpoints: []string{e.Addr}})
	for range 3 {
		if _, err := c.Get(testCtx(t), []byte("k"), WithConsistency(kvpb.Consistency_CONSISTENCY_STALE)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Calls(clienttest.MethodGet); got != 3 {
		t.Fatalf("n2 got %d gets, want 3 (n3 is removed)", got)
	}
	// With no follower left the leader serves weak reads too.
	st.SetNodes(a.Node(), e.Node(), &kvpb.NodeInfo{Id: "n2", GrpcAddr: b.Addr, State: clienttest.StateRemoved},
		&kvpb.NodeInfo{Id: "n3", GrpcAddr: d.Addr, State: clienttest.StateRemoved})
	if _, err := c.Ranges(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(testCtx(t), []byte("k"), WithConsistency(kvpb.Consistency_CONSISTENCY_STALE), WithExplain())
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Calls(clienttest.MethodGet); got != 1 {
		t.Fatalf("the leader got %d gets, want 1", got)
	}
	if why := resp.GetHeader().GetExplain().GetChosenBecause(); !strings.Contains(why, "the leader") {
		t.Fatalf("chosen_because = %q, want it to name the leader", why)
	}
}

func TestRouting_CanBeDisabled(t *testing.T) {
	_, a, b := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}, DisableRouting: true})
	mustPut(t, c, "x", "v")
	if a.Calls(clienttest.MethodPut) != 1 || b.Calls(clienttest.MethodPut) != 0 {
		t.Fatalf("with routing disabled the put went to n2")
	}
	if got := a.Calls(clienttest.MethodRanges); got != 0 {
		t.Fatalf("with routing disabled the table was fetched %d times", got)
	}
}

func TestRouting_RespectsThePoolCap(t *testing.T) {
	_, a, b := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	for i := range maxPoolSize - 1 {
		// grpc.NewClient does not connect, so these cost nothing.
		if _, err := c.pool.conn(fmt.Sprintf("127.0.0.1:%d", 40000+i)); err != nil {
			t.Fatal(err)
		}
	}
	mustPut(t, c, "x", "v")
	if a.Calls(clienttest.MethodPut) != 1 || b.Calls(clienttest.MethodPut) != 0 {
		t.Fatalf("a full pool still dialled the routed node")
	}
}

func TestRouting_TableExpiresAndRefreshesInTheBackground(t *testing.T) {
	st, a, b := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	var mu sync.Mutex
	now := time.Now()
	c.router.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	mustPut(t, c, "x", "v")
	st.SetLeader(2, "n1")
	mu.Lock()
	now = now.Add(RoutingTTL + time.Second)
	mu.Unlock()
	// The expired table still routes this one while a refresh runs.
	mustPut(t, c, "x", "v")
	if got := b.Calls(clienttest.MethodPut); got != 2 {
		t.Fatalf("n2 got %d puts, want 2", got)
	}
	harness.Eventually(t, "a refresh after the TTL", 5*time.Second, func() bool { return a.Calls(clienttest.MethodRanges) >= 2 })
	// Wait until the refreshed table is in place, then it routes.
	harness.Eventually(t, "the refreshed table to be stored", 5*time.Second, func() bool {
		c.router.mu.Lock()
		defer c.router.mu.Unlock()
		return c.router.mu.version >= 2
	})
	mustPut(t, c, "x", "v")
	if got := a.Calls(clienttest.MethodPut); got != 1 {
		t.Fatalf("n1 got %d puts after the refresh, want 1", got)
	}
}

func TestRouting_FetchFailureLeavesRequestsUnrouted(t *testing.T) {
	_, a, b := twoRanges(t)
	a.Fail(clienttest.MethodRanges, 1, rpctypes.Error(codes.Internal, rpctypes.ReasonInternal, "boom", nil))
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	mustPut(t, c, "x", "v")
	mustPut(t, c, "y", "v")
	if a.Calls(clienttest.MethodPut) != 2 || b.Calls(clienttest.MethodPut) != 0 {
		t.Fatalf("puts went to n1 %d and n2 %d times, want n1 only while the table is unavailable",
			a.Calls(clienttest.MethodPut), b.Calls(clienttest.MethodPut))
	}
	if got := a.Calls(clienttest.MethodRanges); got != 1 {
		t.Fatalf("table fetched %d times right after a failure, want 1", got)
	}
}

func TestRouting_ConcurrentRequestsShareOneFetch(t *testing.T) {
	st, a, b := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			if _, err := c.Put(testCtx(t), fmt.Appendf(nil, "%c%d", 'a'+i%26, i), []byte("v")); err != nil {
				t.Errorf("Put: %v", err)
			}
		})
	}
	wg.Wait()
	if got := st.Len(); got != 64 {
		t.Fatalf("%d keys stored, want 64", got)
	}
	if got := a.Calls(clienttest.MethodRanges); got != 1 {
		t.Fatalf("table fetched %d times, want 1", got)
	}
	if b.Calls(clienttest.MethodPut) == 0 {
		t.Fatalf("no put was routed to n2")
	}
}

func TestClient_SplitRangeAndRanges(t *testing.T) {
	st, a, _ := twoRanges(t)
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	mustPut(t, c, "x", "v") // caches the table
	resp, err := c.SplitRange(testCtx(t), []byte("t"))
	if err != nil {
		t.Fatalf("SplitRange: %v", err)
	}
	l, r := resp.GetLeft(), resp.GetRight()
	if l.GetId() != 2 || string(l.GetStart()) != "m" || string(l.GetEnd()) != "t" ||
		r.GetId() != 3 || string(r.GetStart()) != "t" || len(r.GetEnd()) != 0 || r.GetGeneration() != 2 {
		t.Fatalf("split returned %v and %v", l, r)
	}
	if _, err := c.SplitRange(testCtx(t), []byte("t")); !IsInvalid(err) {
		t.Fatalf("splitting at a range start: err = %v, want invalid", err)
	}
	// The split dropped the cached table.
	mustPut(t, c, "y", "v")
	if got := a.Calls(clienttest.MethodRanges); got != 2 {
		t.Fatalf("table fetched %d times, want 2 (once more after the split)", got)
	}
	ranges, err := c.Ranges(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(ranges.GetRanges()); got != 3 || len(st.Ranges()) != 3 || len(ranges.GetNodes()) != 2 {
		t.Fatalf("Ranges = %v, want 3 ranges and 2 nodes", ranges)
	}
}

func TestNew_RefusesABadLocality(t *testing.T) {
	for _, loc := range []string{"region", "region=eu,region=us", "zone=", "region=eu,,zone=a"} {
		if c, err := New(Config{Endpoints: []string{"127.0.0.1:7010"}, Locality: loc}); err == nil {
			c.Close()
			t.Errorf("New with Locality %q succeeded, want an error", loc)
		}
	}
}
