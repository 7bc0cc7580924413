package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func sessionRead(token string) *kvpb.ReadOptions {
	return &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_SESSION, SessionToken: token}
}

// TestSession_TokenAheadOfItsRangeIsRefusedAtOnce: a token naming an index
// its range never committed is refused as invalid on every replica, well
// before the second a replica waits for an index it lacks (it used to
// wait, fail STALE_REPLICA, and echo the token to poison later reads). A
// real token, and one naming a range this node cannot place, are served
// and handed back.
func TestSession_TokenAheadOfItsRangeIsRefusedAtOnce(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	put := c.mustPut(l, "k", "v")
	id, rev := put.Header.RangeId, put.Header.Revision
	for i := range c.nodes {
		// Served: the real token, plus an entry for a range no node has,
		// which comes back with the answer (it may be a range split off
		// since this node's view).
		tok := fmt.Sprintf("%d:%d,4242:7", id, rev)
		resp := c.mustGet(i, "k", "v", sessionRead(tok))
		if got := resp.Header.SessionToken; !strings.HasSuffix(got, ",4242:7") {
			t.Errorf("n%d answered token %q; want it to keep 4242:7", i+1, got)
		}

		ahead := fmt.Sprintf("%d:%d", id, rev+1_000_000)
		start := time.Now()
		_, err := c.get(i, "k", sessionRead(ahead))
		took := time.Since(start)
		if !errors.Is(err, replication.ErrBadSessionToken) {
			t.Errorf("n%d: session read with %s: %v; want ErrBadSessionToken", i+1, ahead, err)
		}
		if took > 750*time.Millisecond {
			t.Errorf("n%d refused the token after %v; want at once, not after a wait", i+1, took)
		}
		t.Logf("n%d refused %s after %v: %v", i+1, ahead, took.Round(time.Millisecond), err)
	}
	// A token naming more ranges than the cluster has is refused, not
	// echoed.
	parts := make([]string, 2000)
	for i := range parts {
		parts[i] = fmt.Sprintf("%d:1", 1000+i)
	}
	if _, err := c.get(l, "k", sessionRead(strings.Join(parts, ","))); !errors.Is(err, replication.ErrBadSessionToken) {
		t.Errorf("session read with a 2000-range token: %v; want ErrBadSessionToken", err)
	}
}

// TestSession_TokenOfALaggingReplicaIsNotRefused: a replica whose log does
// not hold the token's index yet (it was down while the write committed)
// asks the leader, finds the index committed, and waits or refuses with
// STALE_REPLICA, never calling the token invalid; it serves the write once
// it catches up.
func TestSession_TokenOfALaggingReplicaIsNotRefused(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	c.stop(f)
	var put *kvpb.PutResponse
	for i := range 20 {
		put = c.mustPut(l, fmt.Sprintf("k%d", i), "v")
	}
	c.start(f)
	served := false
	for attempt := 0; attempt < 30 && !served; attempt++ {
		resp, err := c.get(f, "k19", sessionRead(put.Header.SessionToken))
		switch {
		case err == nil:
			if string(resp.Kv.Value) != "v" || resp.Header.AppliedIndex < put.Header.Revision {
				t.Fatalf("served %q at applied index %d; want v at %d or later", resp.Kv.Value, resp.Header.AppliedIndex, put.Header.Revision)
			}
			served = true
		case errors.Is(err, replication.ErrBadSessionToken):
			t.Fatalf("attempt %d: the restarted replica refused a real token as invalid: %v", attempt, err)
		default:
			t.Logf("attempt %d: %v", attempt, err) // not caught up yet; the read waited up to a second
		}
	}
	if !served {
		t.Fatal("the restarted replica never served the session read")
	}
}

// TestSession_TokenStillGuardsKeysAfterASplit: an entry for a range that
// has since split keeps guarding the keys that moved to the new range, and
// the new range's own entries count in its own log.
func TestSession_TokenStillGuardsKeysAfterASplit(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "a", "a1")
	before := c.mustPut(l, "m", "m1").Header
	sp := c.split(l, "h")
	parent, child := sp.Left.Id, sp.Right.Id
	if parent != before.RangeId {
		t.Fatalf("split left range %d; the write was in %d", parent, before.RangeId)
	}
	for i := range c.nodes {
		// "m" moved to the new range: the old token still reads it (from
		// the new range, or from a replica of the parent that has not
		// applied the split yet, which holds m1 too).
		resp := c.mustGet(i, "m", "m1", sessionRead(before.SessionToken))
		if id := resp.Header.RangeId; id != child && id != parent {
			t.Errorf("n%d served m from range %d", i+1, id)
		}
	}
	after := c.mustPut(l, "m", "m2").Header
	if after.RangeId != child {
		t.Fatalf("write of m went to range %d; want %d", after.RangeId, child)
	}
	tok := fmt.Sprintf("%d:%d,%d:%d", parent, before.Revision, child, after.Revision)
	for i := range c.nodes {
		c.mustGet(i, "m", "m2", sessionRead(tok))
		c.mustGet(i, "a", "a1", sessionRead(tok))
	}
	// The new range's log is its own: an index beyond it is refused even
	// though the parent's log is that long.
	ahead := fmt.Sprintf("%d:%d", child, after.Revision+before.Revision+1000)
	if _, err := c.get(l, "m", sessionRead(ahead)); !errors.Is(err, replication.ErrBadSessionToken) {
		t.Errorf("session read with %s: %v; want ErrBadSessionToken", ahead, err)
	}
}

// TestScan_WithoutEndOnTheServingReplica: a scan whose end is empty but not
// nil (what the HTTP API passed for a scan without ?end=) returns every
// key on the replica that serves it, as it does when forwarded.
func TestScan_WithoutEndOnTheServingReplica(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "k1", "v")
	c.mustPut(l, "k2", "v")
	for i := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.nodes[i].Scan(ctx, &kvpb.ScanRequest{Start: []byte{}, End: []byte{}, Read: linearizable})
		cancel()
		if err != nil {
			t.Fatalf("scan via n%d: %v", i+1, err)
		}
		if len(resp.Kvs) != 2 {
			t.Errorf("scan via n%d (served by %s) found %d keys; want 2", i+1, resp.Header.ServedBy, len(resp.Kvs))
		}
	}
}

// TestReady_NotReadyWhileTheDiskIsFull: the node reports ErrDiskFull while
// its data filesystem has less than the reserve free, and ready again once
// space returns.
func TestReady_NotReadyWhileTheDiskIsFull(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	n := c.nodes[l]
	ctx := context.Background()
	c.eventually("n"+fmt.Sprint(l+1)+" ready", 20*time.Second, func() bool { return n.Ready(ctx) == nil })

	for _, tc := range []struct {
		name string
		free uint64
		err  error
		full bool
	}{
		{"no space", 0, nil, true},
		{"just under the reserve", replication.DiskReserve - 1, nil, true},
		{"at the reserve", replication.DiskReserve, nil, false},
		{"plenty", 1 << 40, nil, false},
		{"the filesystem cannot be asked", 0, errors.New("statfs: input/output error"), false},
	} {
		n.SetDiskFreeForTest(func(dir string) (uint64, error) {
			if dir != c.cfgs[l].DataDir {
				t.Errorf("free space asked of %s; want the data dir %s", dir, c.cfgs[l].DataDir)
			}
			return tc.free, tc.err
		})
		err := n.Ready(ctx)
		if got := errors.Is(err, replication.ErrDiskFull); got != tc.full {
			t.Errorf("%s: Ready = %v; want disk full %v", tc.name, err, tc.full)
		}
		if !tc.full && err != nil {
			t.Errorf("%s: Ready = %v; want nil", tc.name, err)
		}
	}
	// The real filesystem of a test's temporary directory has room.
	n.SetDiskFreeForTest(nil)
	if err := n.Ready(ctx); err != nil {
		t.Errorf("Ready on the real filesystem: %v", err)
	}
}

// TestForward_DeadlineIsReportedAsADeadline: a request whose deadline ends
// on its way to a leader that is known and up is reported as a deadline
// (DEADLINE_EXCEEDED for a read, INDETERMINATE for a write that may have
// reached the leader), not NO_LEADER, which the Go client retries as if
// the request had never been sent.
func TestForward_DeadlineIsReportedAsADeadline(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	c.mustPut(l, "k", "v")
	c.mustGet(f, "k", "v", linearizable) // f knows the leader and has a connection to it
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()

	_, err := c.nodes[f].Get(expired, &kvpb.GetRequest{Key: []byte("k"), Read: linearizable})
	if errors.Is(err, replication.ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("forwarded read past its deadline: %v; want the deadline, not no leader", err)
	}
	_, err = c.nodes[f].Put(expired, &kvpb.PutRequest{Key: []byte("k"), Value: []byte("w")})
	if !errors.Is(err, shard.ErrIndeterminate) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("forwarded write past its deadline: %v; want indeterminate and the deadline", err)
	}

	// What a client sees, through the API.
	svc := api.NewService(c.nodes[f], api.DefaultLimits(), api.NewMetrics(prometheus.NewRegistry()), nil)
	_, err = svc.Get(expired, &kvpb.GetRequest{Key: []byte("k")})
	if status.Code(err) != codes.DeadlineExceeded || rpctypes.ReasonOf(err) != rpctypes.ReasonDeadline {
		t.Errorf("API read past its deadline: %v (reason %s); want DeadlineExceeded %s", err, rpctypes.ReasonOf(err), rpctypes.ReasonDeadline)
	}
	_, err = svc.Put(expired, &kvpb.PutRequest{Key: []byte("k"), Value: []byte("w")})
	if status.Code(err) != codes.DeadlineExceeded || rpctypes.ReasonOf(err) != rpctypes.ReasonIndeterminate {
		t.Errorf("API write past its deadline: %v (reason %s); want DeadlineExceeded %s", err, rpctypes.ReasonOf(err), rpctypes.ReasonIndeterminate)
	}
}
