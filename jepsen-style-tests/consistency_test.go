package jepsen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// The promises of the four read levels (see docs/consistency.md),
// proved against real processes: a follower cut off from the rest of the
// cluster by SIGSTOP-ing the other two nodes must answer `stale` at once,
// refuse `linearizable` within the deadline, serve `bounded` only while its
// bound lasts, and serve `session` only when the token is met.

// levelGet is one HTTP GET at a level, timed.
type levelGet struct {
	httpResult
	err      error
	start    time.Time
	took     time.Duration
	servedBy string
	reason   string
	stale    int64 // X-Dialkv-Staleness-Ms, -2 when absent
}

func (g levelGet) String() string {
	if g.err != nil {
		return fmt.Sprintf("error %v after %v", g.err, g.took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%d %q reason %q served_by %q staleness_ms %d after %v",
		g.code, trimBody(g.body), g.reason, g.servedBy, g.stale, g.took.Round(time.Millisecond))
}

func trimBody(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// getLevel reads key from node i at the given query with an optional
// session token, bounding the whole request by limit.
func getLevel(c *Cluster, i int, key string, q url.Values, token string, limit time.Duration) levelGet {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	g := levelGet{start: time.Now(), stale: -2}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, kvURL(c, i, key, q.Encode()), nil)
	if err != nil {
		g.err = err
		return g
	}
	if token != "" {
		req.Header.Set("X-Dialkv-Session", token)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		g.err, g.took = err, time.Since(g.start)
		return g
	}
	defer resp.Body.Close()
	var body []byte
	body, g.err = io.ReadAll(resp.Body)
	g.took = time.Since(g.start)
	g.httpResult = httpResult{code: resp.StatusCode, header: resp.Header, body: body}
	g.servedBy = resp.Header.Get("X-Dialkv-Served-By")
	g.reason = resp.Header.Get("X-Dialkv-Reason")
	if s := resp.Header.Get("X-Dialkv-Staleness-Ms"); s != "" {
		g.stale, _ = strconv.ParseInt(s, 10, 64)
	}
	return g
}

// putToken writes key=value through node i over HTTP and returns the
// session token of the acknowledged write.
func putToken(t *testing.T, c *Cluster, i int, key, value string) (token string, ackedAt time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for attempt := 0; attempt < 20; attempt++ {
		r, err := httpDo(ctx, c, http.MethodPut, kvURL(c, i, key, "timeout=2s"), []byte(value))
		if err == nil && r.code == http.StatusOK {
			tok := r.header.Get("X-Dialkv-Session")
			if tok == "" {
				t.Fatalf("PUT %s: no X-Dialkv-Session header: %v", key, r.header)
			}
			return tok, time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("PUT %s via %s never acknowledged: %v %d %s", key, c.ID(i), err, r.code, r.body)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("PUT %s via %s never acknowledged", key, c.ID(i))
	return "", time.Time{}
}

// grpcConns dials every node's client gRPC address; closed at cleanup.
func grpcConns(t *testing.T, c *Cluster) []*grpc.ClientConn {
	t.Helper()
	var out []*grpc.ClientConn
	for _, a := range c.GRPCAddrs() {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("dial %s: %v", a, err)
		}
		t.Cleanup(func() { cc.Close() })
		out = append(out, cc)
	}
	return out
}

// waitLocal polls a stale read of key on node i until it returns want.
func waitLocal(t *testing.T, c *Cluster, i int, key, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last levelGet
	for time.Now().Before(deadline) {
		last = getLevel(c, i, key, url.Values{"consistency": {"stale"}}, "", time.Second)
		if last.err == nil && last.code == http.StatusOK && string(last.body) == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never applied %s=%q (last stale read: %v)", c.ID(i), key, want, last)
}

// TestConsistency_MinorityFollower cuts one follower F off by pausing the
// two other nodes, after letting F miss one acknowledged write, and checks
// each level's answer on F against the promise.
func TestConsistency_MinorityFollower(t *testing.T) {
	c := startCluster(t, 3)
	conns := grpcConns(t, c)
	ctx := context.Background()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := (leader + 1) % c.N()
	other := 3 - leader - f
	t.Logf("leader %s, minority follower %s, other follower %s", c.ID(leader), c.ID(f), c.ID(other))
	// Whatever happens, nobody is left frozen: Close sends SIGCONT before
	// SIGTERM too, but a resumed node also lets the cleanup dump logs.
	t.Cleanup(func() {
		for i := range c.N() {
			if c.Paused(i) {
				c.Resume(i)
			}
		}
	})

	const key = "mf/key"
	tok1, _ := putToken(t, c, leader, key, "v1")
	waitLocal(t, c, f, key, "v1")
	const maxStaleness = 2 * time.Second
	bq := url.Values{"consistency": {"bounded"}, "max_staleness": {maxStaleness.String()}}
	// A healthy bounded read on F; it also asks F to keep its freshness
	// stamps current in the background.
	if g := getLevel(c, f, key, bq, "", 3*time.Second); g.err != nil || g.code != http.StatusOK || string(g.body) != "v1" ||
		g.stale < 0 || g.stale > maxStaleness.Milliseconds() {
		t.Fatalf("healthy bounded read on %s: %v", c.ID(f), g)
	}
	time.Sleep(300 * time.Millisecond) // a few background stamps

	// F misses v2: frozen while the other two commit it.
	if err := c.Pause(f); err != nil {
		t.Fatal(err)
	}
	fPausedAt := time.Now()
	tok2, v2AckedAt := putToken(t, c, leader, key, "v2")
	for _, i := range []int{leader, other} {
		if err := c.Pause(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Resume(f); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("%s paused %v before v2 was acknowledged; majority paused and %s resumed %v after",
		c.ID(f), v2AckedAt.Sub(fPausedAt).Round(time.Millisecond), c.ID(f), cutAt.Sub(v2AckedAt).Round(time.Millisecond))

	// stale: at once, from F's own state (v1, since F never saw v2).
	t.Run("stale answers at once", func(t *testing.T) {
		for k := range 5 {
			g := getLevel(c, f, key, url.Values{"consistency": {"stale"}}, "", 2*time.Second)
			if g.err != nil || g.code != http.StatusOK || string(g.body) != "v1" || g.servedBy != c.ID(f) ||
				g.header.Get("X-Dialkv-Consistency") != "stale" {
				t.Errorf("stale read %d on the cut-off %s: %v, want 200 v1 served by it", k, c.ID(f), g)
			}
			if g.took > 250*time.Millisecond {
				t.Errorf("stale read %d on the cut-off %s took %v, want at once", k, c.ID(f), g.took)
			}
			if g.stale == -2 {
				t.Errorf("stale read %d: no X-Dialkv-Staleness-Ms header", k)
			}
		}
		r, err := kvpb.NewKVClient(conns[f]).Get(ctx, &kvpb.GetRequest{Key: []byte(key), Read: &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE}})
		if err != nil || string(r.GetKv().GetValue()) != "v1" || r.GetHeader().GetServedBy() != c.ID(f) {
			t.Errorf("gRPC stale read on %s: %v %v", c.ID(f), r, err)
		}
	})

	// bounded: served while F can show staleness within the bound, then
	// refused. F's newest stamp predates its own pause, which predates v2's
	// acknowledgement, so a read starting later than v2AckedAt + bound
	// must be refused (it would have to show v2).
	t.Run("bounded refused once the bound has run out", func(t *testing.T) {
		var served, refused int
		var firstRefusal time.Time
		reasons := map[string]int{}
		for time.Since(cutAt) < maxStaleness+2*time.Second {
			g := getLevel(c, f, key, bq, "", 3*time.Second)
			switch {
			case g.err == nil && g.code == http.StatusOK:
				served++
				if string(g.body) != "v1" {
					t.Errorf("bounded read on %s returned %q", c.ID(f), g.body)
				}
				if g.stale < 0 || g.stale > maxStaleness.Milliseconds() {
					t.Errorf("bounded read served with staleness %d ms, bound %v", g.stale, maxStaleness)
				}
				if late := g.start.Sub(fPausedAt); late > maxStaleness {
					t.Errorf("bounded read started %v after %s froze was served (%v): its state cannot be that fresh",
						late.Round(time.Millisecond), c.ID(f), g)
				}
				if !firstRefusal.IsZero() {
					t.Errorf("bounded read served again after a refusal: %v", g)
				}
			case g.err == nil && g.code == http.StatusServiceUnavailable && g.reason == string(rpctypes.ReasonStaleReplica):
				refused++
				reasons[g.reason]++
				if firstRefusal.IsZero() {
					firstRefusal = g.start
					t.Logf("first bounded refusal %v after %s froze: %v", g.start.Sub(fPausedAt).Round(time.Millisecond), c.ID(f), g)
				}
				if g.took > 1500*time.Millisecond {
					t.Errorf("bounded refusal took %v", g.took)
				}
			default:
				t.Errorf("bounded read on %s: %v, want 200 v1 or 503 %s", c.ID(f), g, rpctypes.ReasonStaleReplica)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("bounded (max_staleness %v) on the cut-off %s: %d served, %d refused %v", maxStaleness, c.ID(f), served, refused, reasons)
		if firstRefusal.IsZero() {
			t.Fatalf("bounded reads were never refused")
		}
		if at := firstRefusal.Sub(fPausedAt); at > maxStaleness+200*time.Millisecond {
			t.Errorf("first bounded refusal came %v after %s froze, want by the bound %v", at, c.ID(f), maxStaleness)
		}
		_, err := kvpb.NewKVClient(conns[f]).Get(ctx, &kvpb.GetRequest{Key: []byte(key), Read: &kvpb.ReadOptions{
			Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, MaxStaleness: durationpb.New(maxStaleness)}})
		if status.Code(err) != codes.FailedPrecondition || rpctypes.ReasonOf(err) != rpctypes.ReasonStaleReplica {
			t.Errorf("gRPC bounded read after the bound ran out: %v, want FailedPrecondition %s", err, rpctypes.ReasonStaleReplica)
		}
	})

	// session: met token at once, unmet token refused after the wait.
	t.Run("session only when the token is met", func(t *testing.T) {
		sq := url.Values{"consistency": {"session"}}
		g := getLevel(c, f, key, sq, tok1, 3*time.Second)
		if g.err != nil || g.code != http.StatusOK || string(g.body) != "v1" || g.took > 250*time.Millisecond {
			t.Errorf("session read with the met token %s on %s: %v, want 200 v1 at once", tok1, c.ID(f), g)
		}
		g = getLevel(c, f, key, sq, tok2, 5*time.Second)
		if g.err != nil || g.code != http.StatusServiceUnavailable || g.reason != string(rpctypes.ReasonStaleReplica) {
			t.Errorf("session read with the unmet token %s on %s: %v, want 503 %s", tok2, c.ID(f), g, rpctypes.ReasonStaleReplica)
		}
		if g.took < 900*time.Millisecond || g.took > 2*time.Second {
			t.Errorf("session read with the unmet token refused after %v, want after its ~1s wait", g.took)
		}
		_, err := kvpb.NewKVClient(conns[f]).Get(ctx, &kvpb.GetRequest{Key: []byte(key), Read: &kvpb.ReadOptions{
			Consistency: kvpb.Consistency_CONSISTENCY_SESSION, SessionToken: tok2}})
		if status.Code(err) != codes.FailedPrecondition || rpctypes.ReasonOf(err) != rpctypes.ReasonStaleReplica {
			t.Errorf("gRPC session read with the unmet token: %v, want FailedPrecondition %s", err, rpctypes.ReasonStaleReplica)
		}
	})

	// linearizable: refused within the deadline, never an old value.
	t.Run("linearizable refused within the deadline", func(t *testing.T) {
		const deadline = time.Second
		lq := url.Values{"consistency": {"linearizable"}, "timeout": {deadline.String()}}
		for k := range 3 {
			g := getLevel(c, f, key, lq, "", 5*time.Second)
			if g.err != nil || g.code != http.StatusServiceUnavailable {
				t.Errorf("linearizable read %d on the cut-off %s: %v, want 503", k, c.ID(f), g)
			}
			if g.took > deadline+500*time.Millisecond {
				t.Errorf("linearizable read %d on the cut-off %s answered after %v, want within %v + 500ms", k, c.ID(f), g.took, deadline)
			}
			t.Logf("linearizable read %d on the cut-off %s: %v", k, c.ID(f), g)
		}
		gctx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		_, err := kvpb.NewKVClient(conns[f]).Get(gctx, &kvpb.GetRequest{Key: []byte(key)})
		took := time.Since(start)
		cancel()
		// The server answers UNAVAILABLE at its deadline; the client's
		// own deadline (the same instant) may fire first.
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			t.Errorf("gRPC linearizable read on the cut-off %s: %v, want Unavailable", c.ID(f), err)
		}
		if took > deadline+500*time.Millisecond {
			t.Errorf("gRPC linearizable read answered after %v", took)
		}
		t.Logf("gRPC linearizable read on the cut-off %s: %v after %v", c.ID(f), err, took.Round(time.Millisecond))
	})

	// Heal: F catches up and serves v2 at every level.
	for _, i := range []int{leader, other} {
		if err := c.Resume(i); err != nil {
			t.Fatal(err)
		}
	}
	waitLocal(t, c, f, key, "v2")
	if g := getLevel(c, f, key, url.Values{"consistency": {"session"}}, tok2, 3*time.Second); g.err != nil || g.code != http.StatusOK || string(g.body) != "v2" {
		t.Errorf("after heal, session read with the v2 token on %s: %v", c.ID(f), g)
	}
}

// TestConsistency_ReadYourWritesOnFollowers writes through the leader and
// at once reads from a follower with the write's token, over HTTP and
// gRPC: the read must see the write.
func TestConsistency_ReadYourWritesOnFollowers(t *testing.T) {
	c := startCluster(t, 3)
	conns := grpcConns(t, c)
	leader, err := c.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 150
	var waited []time.Duration
	for k := range rounds {
		key := fmt.Sprintf("ryw/%d", k%7)
		value := fmt.Sprintf("v%d", k)
		follower := (leader + 1 + k%2) % c.N()
		var token string
		if k%2 == 0 {
			token, _ = putToken(t, c, leader, key, value)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := kvpb.NewKVClient(conns[leader]).Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(value)})
			cancel()
			if err != nil {
				t.Fatalf("gRPC put %s: %v", key, err)
			}
			token = r.GetHeader().GetSessionToken()
		}
		if k%3 == 0 {
			g := getLevel(c, follower, key, url.Values{"consistency": {"session"}}, token, 5*time.Second)
			if g.err != nil || g.code != http.StatusOK || string(g.body) != value || g.servedBy != c.ID(follower) {
				t.Fatalf("round %d: HTTP session read of %s on follower %s with token %s: %v, want 200 %q served by it",
					k, key, c.ID(follower), token, g, value)
			}
			waited = append(waited, g.took)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		r, err := kvpb.NewKVClient(conns[follower]).Get(ctx, &kvpb.GetRequest{Key: []byte(key), Read: &kvpb.ReadOptions{
			Consistency: kvpb.Consistency_CONSISTENCY_SESSION, SessionToken: token}})
		cancel()
		waited = append(waited, time.Since(start))
		if err != nil || string(r.GetKv().GetValue()) != value || r.GetHeader().GetServedBy() != c.ID(follower) {
			t.Fatalf("round %d: gRPC session read of %s on follower %s with token %s: %v %v, want %q served by it",
				k, key, c.ID(follower), token, r, err, value)
		}
	}
	var total, worst time.Duration
	for _, d := range waited {
		total += d
		worst = max(worst, d)
	}
	t.Logf("%d session reads on followers right after the write: all saw it; mean %v, worst %v",
		rounds, (total / time.Duration(len(waited))).Round(time.Microsecond), worst.Round(time.Microsecond))
}

// TestConsistency_ReadThroughput measures reads per second at each level
// on a healthy cluster with the same 16 gRPC clients spread over the
// nodes; it logs the figures and asserts nothing about them.
func TestConsistency_ReadThroughput(t *testing.T) {
	c := startCluster(t, 3)
	conns := grpcConns(t, c)
	leader, err := c.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const (
		clients = 16
		keys    = 64
		each    = 2 * time.Second
	)
	var token string
	for k := range keys {
		token, _ = putToken(t, c, leader, fmt.Sprintf("tp/%02d", k), fmt.Sprintf("value-%d", k))
	}
	levels := []struct {
		name string
		opts *kvpb.ReadOptions
	}{
		{"linearizable", &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_LINEARIZABLE}},
		{"bounded(1s)", &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, MaxStaleness: durationpb.New(time.Second)}},
		{"session", &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_SESSION, SessionToken: token}},
		{"stale", &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE}},
	}
	var linear float64
	for _, lv := range levels {
		var ops, errs atomic.Int64
		var errMu sync.Mutex
		errKinds := map[string]int{}
		var wg sync.WaitGroup
		start := time.Now()
		end := start.Add(each)
		for cl := range clients {
			wg.Go(func() {
				kv := kvpb.NewKVClient(conns[cl%c.N()])
				for k := cl; time.Now().Before(end); k++ {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte(fmt.Sprintf("tp/%02d", k%keys)), Read: lv.opts})
					cancel()
					if err == nil {
						ops.Add(1)
						continue
					}
					errs.Add(1)
					errMu.Lock()
					errKinds[fmt.Sprintf("%v/%s", status.Code(err), rpctypes.ReasonOf(err))]++
					errMu.Unlock()
				}
			})
		}
		wg.Wait()
		rate := float64(ops.Load()) / time.Since(start).Seconds()
		if lv.name == "linearizable" {
			linear = rate
		}
		t.Logf("%-13s %8.0f reads/s  (%.2fx linearizable)  %d errors %v  [%d gRPC clients over %d nodes, %v]",
			lv.name, rate, rate/linear, errs.Load(), errKinds, clients, c.N(), each)
	}
}
