package replication_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (c *testCluster) grant(i int, ttl int64) int64 {
	c.t.Helper()
	resp, err := c.nodes[i].LeaseGrant(context.Background(), &kvpb.LeaseGrantRequest{Ttl: ttl})
	if err != nil {
		c.t.Fatalf("grant on n%d: %v", i+1, err)
	}
	return resp.Id
}

func (c *testCluster) putLease(i int, key, value string, lease int64) ackedWrite {
	c.t.Helper()
	resp, err := c.nodes[i].Put(context.Background(), &kvpb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease})
	if err != nil {
		c.t.Fatalf("put %s with lease %d on n%d: %v", key, lease, i+1, err)
	}
	return ackedWrite{key: key, value: value, rangeID: resp.Header.RangeId, index: resp.Header.Revision}
}

func (c *testCluster) exists(i int, key string) bool {
	_, err := c.get(i, key, nil)
	if err != nil && !errors.Is(err, replication.ErrKeyNotFound) && rpctypes.ReasonOf(err) != rpctypes.ReasonKeyNotFound {
		c.t.Fatalf("get %s: %v", key, err)
	}
	return err == nil
}

// leaseDeletes returns the lease deletes a watcher saw, by key.
func leaseDeletes(w *watcher) map[string]*kvpb.Event {
	evs, _ := w.snapshot()
	out := map[string]*kvpb.Event{}
	for _, e := range evs {
		if e.Type == kvpb.EventType_EVENT_TYPE_DELETE && e.Cause != kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED {
			out[string(e.Key)] = e
		}
	}
	return out
}

// A revoked lease's keys go from every range, and the watch says why.
func TestLease_RevokeDeletesItsKeysInEveryRange(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "l/m", "split point")
	c.split(l, "l/m")
	w := startWatch(t, c, (l+1)%3, &kvpb.WatchRequest{Prefix: []byte("l/")})
	id := c.grant((l+2)%3, 60)
	ranges := map[uint64]bool{}
	for _, k := range []string{"l/a", "l/b", "l/x", "l/y"} {
		ranges[c.putLease((l+1)%3, k, "v", id).rangeID] = true
	}
	if len(ranges) != 2 {
		t.Fatalf("keys landed in %d ranges, want 2", len(ranges))
	}
	c.mustPut(l, "l/z", "no lease")
	ttl, err := c.nodes[l].LeaseTimeToLive(context.Background(), &kvpb.LeaseTimeToLiveRequest{Id: id, Keys: true})
	if err != nil || len(ttl.Keys) != 4 || ttl.GrantedTtl != 60 || ttl.Ttl < 50 {
		t.Fatalf("ttl = %v, %v; want 4 keys, granted 60", ttl, err)
	}
	resp, err := c.nodes[(l+1)%3].LeaseRevoke(context.Background(), &kvpb.LeaseRevokeRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	if resp.KeysDeleted != 4 {
		t.Errorf("revoke deleted %d keys, want 4", resp.KeysDeleted)
	}
	for _, k := range []string{"l/a", "l/b", "l/x", "l/y"} {
		if c.exists(l, k) {
			t.Errorf("%s survived its lease's revoke", k)
		}
	}
	if !c.exists(l, "l/z") {
		t.Error("a key without the lease went with it")
	}
	c.eventually("the watch sees 4 lease deletes", 10*time.Second, func() bool { return len(leaseDeletes(w)) == 4 })
	for k, e := range leaseDeletes(w) {
		if e.Cause != kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED || e.Lease != id {
			t.Errorf("%s deleted with cause %s lease %d, want LEASE_REVOKED %d", k, e.Cause, e.Lease, id)
		}
	}
	if _, err := c.nodes[l].LeaseKeepAlive(context.Background(), &kvpb.LeaseKeepAliveRequest{Id: id}); !leaseNotFound(err) {
		t.Errorf("keepalive of a revoked lease: %v, want ErrLeaseNotFound", err)
	}
	if _, err := c.nodes[l].Put(context.Background(), &kvpb.PutRequest{Key: []byte("l/late"), Value: []byte("v"), Lease: id}); !leaseNotFound(err) {
		t.Errorf("put with a revoked lease: %v, want ErrLeaseNotFound", err)
	}
}

// A revoke is answered only when every range is known to hold none of the
// lease's keys. One answered while the range holding a key was electing a
// leader (its leader had just died) left the key for the range's sweep,
// and a read just after the answer found it (a Jepsen run, 0.4 s after).
func TestLease_RevokeWaitsForARangeElectingALeader(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	id := c.grant(l, 60)
	c.putLease(l, "r/a", "v", id)
	// The meta range led elsewhere, so that only the user range loses
	// its leader. (Right after the start a transfer can fail while the
	// nodes learn each other's addresses: tried again.)
	m := c.metaLeader()
	to := fmt.Sprintf("n%d", (l+1)%3+1)
	c.eventually("the meta range led by another node", 10*time.Second, func() bool {
		if m = c.metaLeader(); m != l {
			return true
		}
		_, err := c.nodes[l].TransferLeader(context.Background(), &kvpb.TransferLeaderRequest{RangeId: 1, ToNode: to})
		return err == nil && c.metaLeader() != l
	})
	if m = c.metaLeader(); m == l {
		t.Fatalf("n%d leads the meta range again", l+1)
	}
	c.stop(l)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[m].LeaseRevoke(ctx, &kvpb.LeaseRevokeRequest{Id: id}); err != nil {
		t.Fatalf("revoke while the user range elects a leader: %v", err)
	}
	if c.exists(m, "r/a") {
		t.Fatal("r/a present at a read after its lease's revoke was answered")
	}
	// Revoking again finds the lease ended, and says so.
	if _, err := c.nodes[m].LeaseRevoke(ctx, &kvpb.LeaseRevokeRequest{Id: id}); !leaseNotFound(err) {
		t.Errorf("second revoke: %v, want LEASE_NOT_FOUND", err)
	}
}

// A put whose lease check passed just before the lease's revoke committed
// is proposed after it: the revoke must not answer before the put's entry
// settles, or the key outlives the revoke's answer (until the range's
// sweep).
func TestLease_RevokeWaitsForAPutThatPassedItsCheck(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	id := c.grant(l, 60)
	c.putLease(l, "r/a", "v", id)
	err := c.revokeDuringHeldWrite(id, func(ctx context.Context) error {
		_, err := c.nodes[l].Put(ctx, &kvpb.PutRequest{Key: []byte("r/b"), Value: []byte("v"), Lease: id})
		return err
	})
	t.Logf("the put with the lease answered %v", err)
	if err != nil && !leaseNotFound(err) {
		t.Errorf("the put answered %v, want success (its key then deleted by the revoke) or LEASE_NOT_FOUND", err)
	}
	for _, key := range []string{"r/a", "r/b"} {
		if c.exists(l, key) {
			t.Errorf("%s present at a read after its lease's revoke was answered", key)
		}
	}
}

// The same for a transaction across ranges, coordinated by a node that
// leads none of them: its ranges' leaders propose no write of its own to
// wait for or fence, so it checks its leases again once its locks are in
// place, and gives up.
func TestLease_ATransactionThatPassedItsCheckBeforeARevokeWritesNothing(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "r/a", "v")
	c.split(l, "r/m")
	c.eventually("two user ranges", 10*time.Second, func() bool { return len(c.ranges(l).Ranges) == 2 })
	id := c.grant(l, 60)
	coordinator := l
	c.eventually("a node leading neither user range", 20*time.Second, func() bool {
		leads := map[int]bool{}
		for i, n := range c.nodes {
			for _, s := range n.Shards() {
				if s.ID() != raftstore.MetaRangeID && s.IsLeader() {
					leads[i] = true
				}
			}
		}
		for i := range c.nodes {
			if !leads[i] {
				coordinator = i
				return true
			}
		}
		return false
	})
	put := func(k string) *kvpb.TxnOp {
		op := txnPut(k, "v")
		op.GetPut().Lease = id
		return op
	}
	err := c.revokeDuringHeldWrite(id, func(ctx context.Context) error {
		_, err := c.nodes[coordinator].Txn(ctx, &kvpb.TxnRequest{Success: []*kvpb.TxnOp{put("r/b"), put("r/x")}})
		return err
	})
	if !leaseNotFound(err) {
		t.Errorf("the transaction answered %v, want LEASE_NOT_FOUND", err)
	}
	for _, key := range []string{"r/b", "r/x"} {
		if c.exists(l, key) {
			t.Errorf("%s present at a read after its lease's revoke was answered", key)
		}
	}
}

// revokeDuringHeldWrite runs write, holds it just after its lease check
// passed, revokes lease id meanwhile, lets the write go on once the revoke
// has answered or waits for it, and returns the write's answer after the
// revoke's (which must succeed).
func (c *testCluster) revokeDuringHeldWrite(id int64, write func(context.Context) error) error {
	c.t.Helper()
	held, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func() {
		once.Do(func() {
			close(held)
			<-resume
		})
	}
	// On every node: a leadership that moved makes the write forward,
	// and the leader it reaches checks the lease.
	for _, n := range c.nodes {
		n.HoldLeasePutsForTest(hold)
		defer n.HoldLeasePutsForTest(nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	writeDone := make(chan error, 1)
	go func() { writeDone <- write(ctx) }()
	select {
	case <-held:
	case err := <-writeDone:
		c.t.Fatalf("the write with the lease answered %v before its check passed", err)
	case <-ctx.Done():
		c.t.Fatal("the write with the lease never passed its check")
	}
	revokeDone := make(chan error, 1)
	go func() {
		_, err := c.nodes[c.metaLeader()].LeaseRevoke(ctx, &kvpb.LeaseRevokeRequest{Id: id})
		revokeDone <- err
	}()
	var revokeErr error
	answered := false
	c.eventually("the revoke answered or waiting for the write", 15*time.Second, func() bool {
		select {
		case revokeErr = <-revokeDone:
			answered = true
			return true
		default:
			for _, n := range c.nodes {
				if n.LeaseDrainsForTest() > 0 {
					return true
				}
			}
			return false
		}
	})
	close(resume)
	writeErr := <-writeDone
	if !answered {
		revokeErr = <-revokeDone
	}
	if revokeErr != nil {
		c.t.Fatalf("revoke: %v", revokeErr)
	}
	c.t.Logf("the revoke answered before the held write went on: %v", answered)
	return writeErr
}

// A revoke leaves asleep the ranges that hold none of the lease's keys (a
// majority of their replicas sleeping without one vouches for them), and
// clears a sleeping range that holds one.
func TestLease_RevokeWakesOnlyTheSleepingRangesWithItsKeys(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) { cfg.HibernateAfter = time.Second })
	l := c.leader()
	c.mustPut(l, "k1", "no lease")
	c.split(l, "k5")
	id := c.grant(l, 60)
	right := c.putLease(l, "k7", "v", id).rangeID
	left := right - 1
	c.eventually("both user ranges hibernating", 20*time.Second, func() bool {
		return c.asleepReplicas(left) == 3 && c.asleepReplicas(right) == 3
	})
	// Each sleeping replica can vouch for its range: it knows the voters
	// and the leader of when it went to sleep, the same on all three.
	leaders := map[string]bool{}
	for i, n := range c.nodes {
		for _, s := range n.Shards() {
			if s.ID() != left {
				continue
			}
			voters, leader, epoch, ok := s.Sleeping()
			if !ok || len(voters) != 3 || leader == "" || epoch == 0 {
				t.Fatalf("n%d: range %d asleep with voters %v, leader %q, sleep %d, ok %v", i+1, left, voters, leader, epoch, ok)
			}
			leaders[leader] = true
		}
	}
	if len(leaders) != 1 {
		t.Fatalf("the sleeping replicas name different leaders: %v", leaders)
	}
	if _, err := c.nodes[(l+1)%3].LeaseRevoke(context.Background(), &kvpb.LeaseRevokeRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		for _, s := range n.Shards() {
			if _, _, _, ok := s.Sleeping(); s.ID() == right && !s.Asleep() && ok {
				t.Errorf("an awake replica of range %d still says it sleeps", right)
			}
		}
	}
	if n := c.asleepReplicas(left); n != 3 {
		t.Errorf("the revoke woke %d replicas of range %d, which holds none of its keys", 3-n, left)
	}
	if c.exists(l, "k7") {
		t.Error("k7 present after its lease's revoke was answered")
	}
}

// An expired lease's key in a range that sleeps goes within the TTL plus
// the bound, without a read to wake the range: the node that led it when
// it went to sleep wakes it to delete the key (it did not: a sleeping
// replica has no Raft leader to ask, so nobody acted for the range).
func TestLease_AnExpiredLeasesKeyInASleepingRangeGoes(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) { cfg.HibernateAfter = time.Second })
	l := c.leader()
	const ttl = 6
	id := c.grant(l, ttl)
	granted := time.Now()
	put := c.putLease(l, "s/k", "v", id)
	c.eventually("the range hibernating", 20*time.Second, func() bool { return c.asleepReplicas(put.rangeID) == 3 })
	if time.Since(granted) > ttl*time.Second {
		t.Fatalf("the range took %v to sleep, longer than the TTL", time.Since(granted))
	}
	held := func() bool { // on any replica, read locally: no read wakes the range
		for _, n := range c.nodes {
			for _, s := range n.Shards() {
				if s.ID() == put.rangeID {
					if _, _, found, _, err := s.FSM().Get([]byte("s/k")); err == nil && found {
						return true
					}
				}
			}
		}
		return false
	}
	c.eventually("the key gone from every replica", 3*ttl*time.Second, func() bool { return !held() })
	if gone := time.Since(granted); gone > ttl*time.Second+3*time.Second {
		t.Errorf("key gone %v after its grant, want within TTL %ds + 3s", gone, ttl)
	}
}

// A lease kept alive outlives its TTL many times over, through changes of
// the meta range's leader; once no longer kept alive it expires within its
// TTL plus a small bound, never before the TTL.
func TestLease_KeptAliveSurvivesLeaderChangesThenExpires(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	w := startWatch(t, c, l, &kvpb.WatchRequest{Prefix: []byte("e/")})
	const ttl = 2
	id := c.grant(l, ttl)
	c.putLease(l, "e/key", "v", id)
	deadline := time.Now().Add(3 * ttl * time.Second)
	var sent time.Time
	moved := 0
	for i := 0; time.Now().Before(deadline) && i < 1000; i++ {
		sent = time.Now()
		ka, err := c.nodes[i%3].LeaseKeepAlive(context.Background(), &kvpb.LeaseKeepAliveRequest{Id: id})
		if err != nil {
			t.Fatalf("keepalive %d: %v", i, err)
		}
		if ka.Ttl != ttl {
			t.Fatalf("keepalive answered TTL %d, want %d", ka.Ttl, ttl)
		}
		if i%3 == 1 {
			// Move the meta range's leadership: the new leader must not
			// forget the keepalives, nor restart the lease's TTL.
			to := fmt.Sprintf("n%d", (c.metaLeader()+1)%3+1)
			if _, err := c.nodes[i%3].TransferLeader(context.Background(), &kvpb.TransferLeaderRequest{RangeId: 1, ToNode: to}); err != nil {
				t.Logf("transfer of the meta range's leadership to %s: %v", to, err)
			} else {
				moved++
			}
		}
		if !c.exists(l, "e/key") {
			t.Fatalf("a kept-alive key vanished after %d keepalives", i)
		}
		time.Sleep(ttl * time.Second / 4) // the client's keepalive period, not synchronisation
	}
	if moved == 0 {
		t.Fatal("the meta range's leadership never moved while the lease was kept alive")
	}
	t.Logf("the meta range's leadership moved %d times while the lease was kept alive", moved)
	c.eventually("the key goes once the lease expires", 10*time.Second, func() bool { return !c.exists(l, "e/key") })
	gone := time.Since(sent)
	if gone < ttl*time.Second {
		t.Errorf("key gone %v after the last keepalive was sent, before the %ds TTL", gone, ttl)
	}
	if gone > ttl*time.Second+3*time.Second {
		t.Errorf("key gone %v after the last keepalive, want within TTL %ds + 3s", gone, ttl)
	}
	c.eventually("the watch sees the expiry", 10*time.Second, func() bool { return len(leaseDeletes(w)) == 1 })
	if e := leaseDeletes(w)["e/key"]; e == nil || e.Cause != kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED || e.Lease != id {
		t.Errorf("expiry event %v, want LEASE_EXPIRED of lease %d", e, id)
	}
	list, err := c.nodes[(l+1)%3].LeaseList(context.Background(), &kvpb.LeaseListRequest{})
	if err != nil || len(list.Leases) != 0 {
		t.Errorf("lease list after expiry = %v, %v; want none", list, err)
	}
}

// leaseNotFound: the error itself, or its status from the node it was
// forwarded to.
func leaseNotFound(err error) bool {
	return errors.Is(err, replication.ErrLeaseNotFound) || rpctypes.ReasonOf(err) == rpctypes.ReasonLeaseNotFound
}

// metaLeader is the index of the node leading the meta range.
func (c *testCluster) metaLeader() int {
	c.t.Helper()
	i := -1
	c.eventually("a meta leader", 20*time.Second, func() bool {
		for j, n := range c.nodes {
			if n == nil {
				continue
			}
			for _, s := range n.Shards() {
				if s.ID() == 1 && s.IsLeader() {
					i = j
					return true
				}
			}
		}
		return false
	})
	return i
}

// A Lease.KeepAlive stream on a node that does not lead the meta range
// forwards its keepalives on one stream to the leader, not one per
// keepalive; it follows the leadership when it moves, and the leader's
// refusal of an ended lease comes back as it is.
func TestLease_AKeepAliveStreamForwardsOnOneStream(t *testing.T) {
	c := newTestCluster(t, 3)
	ml := c.metaLeader()
	f := (ml + 1) % 3
	id := c.grant(ml, 60)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	renew, done := c.nodes[f].KeepAliveSession(ctx)
	defer done()
	keep := func(n int) {
		t.Helper()
		for i := range n {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			ka, err := renew(rctx, &kvpb.LeaseKeepAliveRequest{Id: id})
			rcancel()
			if err != nil {
				t.Fatalf("keepalive %d: %v", i, err)
			}
			if ka.Ttl != 60 || ka.Id != id {
				t.Fatalf("keepalive %d answered %+v", i, ka)
			}
		}
	}
	keep(20)
	if got := c.nodes[f].KeepAliveStreamsForTest(); got != 1 {
		t.Fatalf("20 keepalives opened %d streams to the meta leader, want 1", got)
	}

	// A keepalive out of time gives up with DEADLINE_EXCEEDED (on which
	// clients go to another node), not a write of unknown outcome; sent
	// nothing, it leaves the stream as it was.
	expired, cancelExpired := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	_, err := renew(expired, &kvpb.LeaseKeepAliveRequest{Id: id})
	cancelExpired()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a keepalive out of time: %v, want DEADLINE_EXCEEDED", err)
	}
	keep(3)
	if got := c.nodes[f].KeepAliveStreamsForTest(); got != 1 {
		t.Fatalf("%d streams after a keepalive that was out of time, want 1", got)
	}

	// The leadership moves to the third node: the session follows it.
	other := (ml + 2) % 3
	if _, err := c.nodes[ml].TransferLeader(context.Background(), &kvpb.TransferLeaderRequest{RangeId: 1, ToNode: fmt.Sprintf("n%d", other+1)}); err != nil {
		t.Fatalf("transfer the meta range to n%d: %v", other+1, err)
	}
	c.eventually(fmt.Sprintf("n%d to lead the meta range", other+1), 20*time.Second, func() bool { return c.metaLeader() == other })
	keep(5)
	if got := c.nodes[f].KeepAliveStreamsForTest(); got != 2 {
		t.Fatalf("%d streams after the move, want 2 (one to each leader)", got)
	}

	if _, err := c.nodes[other].LeaseRevoke(context.Background(), &kvpb.LeaseRevokeRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := renew(ctx, &kvpb.LeaseKeepAliveRequest{Id: id}); !leaseNotFound(err) {
		t.Fatalf("keepalive of a revoked lease: %v, want LEASE_NOT_FOUND", err)
	}
}

// A grant is one Raft write of the meta range: its leader reserves ids
// in blocks, so 64 grants append about 64 entries, not 128 (an increment
// of the counter, then the record, each). No id repeats: not among
// concurrent grants on every node, not after the leadership moves, and
// not with a node of the previous release incrementing the counter
// itself; and the counter stays at least every id granted, which the
// sweep's rule for keys of vanished leases relies on.
func TestLease_AGrantIsOneMetaWriteAndNoIDRepeats(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	meta := func(i int) *shard.Shard {
		for _, s := range c.nodes[i].Shards() {
			if s.ID() == raftstore.MetaRangeID {
				return s
			}
		}
		t.Fatalf("n%d holds no meta replica", i+1)
		return nil
	}
	var mu sync.Mutex
	seen := map[int64]string{}
	note := func(id int64, how string) {
		mu.Lock()
		defer mu.Unlock()
		if id <= 0 {
			t.Errorf("%s handed out lease id %d; ids are positive", how, id)
		}
		if was, dup := seen[id]; dup {
			t.Errorf("lease id %d handed out twice: %s, then %s", id, was, how)
		}
		seen[id] = how
	}

	l := c.metaLeader()
	note(c.grant(l, 60), "the first grant")
	const n = 64
	before := meta(l).FSM().AppliedIndex()
	for i := range n {
		note(c.grant(l, 60), fmt.Sprintf("sequential grant %d", i))
	}
	if d := meta(l).FSM().AppliedIndex() - before; d > n+n/4 {
		t.Errorf("%d grants appended %d entries to the meta range; want about one each", n, d)
	}

	// What a meta leader of the previous release does for each grant.
	res, err := meta(l).Propose(ctx, &raftstore.Command{Op: raftstore.OpIncrement, Key: []byte("lease/next")})
	if err != nil {
		t.Fatalf("increment of lease/next: %v", err)
	}
	note(int64(binary.BigEndian.Uint64(res.Value)), "an increment as the previous release grants")

	to := (l + 1) % 3
	if _, err := c.nodes[l].TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: raftstore.MetaRangeID, ToNode: fmt.Sprintf("n%d", to+1)}); err != nil {
		t.Fatalf("transfer of the meta range's leadership: %v", err)
	}
	c.eventually("the meta range's new leader", 20*time.Second, func() bool { return meta(to).IsLeader() })

	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range 50 {
				resp, err := c.nodes[g%3].LeaseGrant(ctx, &kvpb.LeaseGrantRequest{Ttl: 60})
				if err != nil {
					t.Errorf("concurrent grant %d on n%d: %v", i, g%3+1, err)
					return
				}
				note(resp.Id, fmt.Sprintf("concurrent grant %d of client %d on n%d", i, g, g%3+1))
			}
		})
	}
	wg.Wait()

	scan, err := c.nodes[0].MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte("lease/next")})
	if err != nil || len(scan.Kvs) != 1 || len(scan.Kvs[0].Value) != 8 {
		t.Fatalf("scan of lease/next = %v, %v; want one 8-byte counter", scan, err)
	}
	counter := int64(binary.BigEndian.Uint64(scan.Kvs[0].Value))
	for id := range seen {
		if id > counter {
			t.Errorf("lease id %d was handed out beyond the counter %d", id, counter)
		}
	}
	if want := 1 + n + 1 + 6*50; len(seen) != want {
		t.Errorf("%d distinct ids, want %d", len(seen), want)
	}
}

// Grants that wait for one another's reservations all get ids: far more
// grants at once on the meta leader than one block holds (128) wait
// through many reservations, and none fails for it.
func TestLease_ManyGrantsAtOnceAllGetIDs(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.metaLeader()
	const grants = 1500
	ids := make([]int64, grants)
	var wg sync.WaitGroup
	for i := range grants {
		wg.Go(func() {
			resp, err := c.nodes[l].LeaseGrant(context.Background(), &kvpb.LeaseGrantRequest{Ttl: 60})
			if err != nil {
				t.Errorf("grant %d: %v", i, err)
				return
			}
			ids[i] = resp.Id
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, id := range ids {
		if id != 0 && seen[id] {
			t.Fatalf("grant %d got lease id %d, handed out before", i, id)
		}
		seen[id] = true
	}
}
