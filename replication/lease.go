package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Leases live in the meta range, one record per lease under
// metaLeasePrefix (its TTL, a renewal counter, and whether it has ended);
// the keys attached to a lease live in their own ranges, each stored with
// the lease's id and listed in its range's lease index (raftstore).
//
// When a lease ends is decided by one clock at a time: the meta range
// leader's monotonic clock. Every replica of the meta range notes when it
// applied each lease's last grant or keepalive (the apply observer below)
// and counts the TTL from there: that moment is after the client sent the
// request, so a lease is never expired before its TTL has passed since the
// client's last answered keepalive. A new leader has counted from its own
// apply of the same entries as a follower, so leader changes neither
// restart a lease's TTL (leases living forever under leader churn, as in
// etcd-io/etcd#9888) nor shorten it. Only a restarted node counts a full
// TTL from its restart, for the leases it did not see renewed since (so
// does a replica that installed a snapshot, and one whose expiry of a lease
// was refused for a change it did not see: lessor.reload, lessor.resync).
//
// The leader expires a lease by a compare-and-swap of the record it saw
// (renewal counter included) to an ended one: a keepalive that committed
// in between makes the swap fail, and a deposed leader's swap either
// commits before any later keepalive (which then finds the lease ended and
// is refused: the client never heard it renewed) or not at all. Then the
// lease's keys are deleted with an OpLeaseRevoke through each range's log,
// whose delete events carry the cause, until every range is known to hold
// none (lease_clear.go); a put racing the end waits in leaseWrites. A key
// left in a range whose leader was unreachable is found by that range's
// leader's sweep (every leaseSweepEvery) and deleted the same way.

const (
	metaLeasePrefix   = "lease/r/"
	metaLeaseNext     = "lease/next"
	leaseRecordV1     = 1
	leaseTick         = 100 * time.Millisecond
	leaseSweepEvery   = 2 * time.Second
	maxLeaseTTL       = 1 << 31
	leaseFeature      = "lease-v1"
	watchFeature      = "watch-v1"
	leaseExpireAtOnce = 256
)

// nodeFeatures is what this release registers in the meta range.
var nodeFeatures = []string{leaseFeature, watchFeature, txnFeature, leaseClearFeature}

type leaseState byte

const (
	leaseAlive leaseState = iota
	leaseExpired
	leaseRevoked
)

// leaseRecord is a lease's meta-range value.
type leaseRecord struct {
	ttl   int64 // seconds
	renew uint64
	state leaseState
}

func (r leaseRecord) encode() []byte {
	b := []byte{leaseRecordV1, byte(r.state)}
	b = binary.AppendUvarint(b, uint64(r.ttl))
	return binary.AppendUvarint(b, r.renew)
}

func decodeLeaseRecord(b []byte) (leaseRecord, bool) {
	if len(b) < 2 || b[0] != leaseRecordV1 {
		return leaseRecord{}, false
	}
	r := leaseRecord{state: leaseState(b[1])}
	ttl, w := binary.Uvarint(b[2:])
	if w <= 0 {
		return leaseRecord{}, false
	}
	renew, w2 := binary.Uvarint(b[2+w:])
	if w2 <= 0 {
		return leaseRecord{}, false
	}
	r.ttl, r.renew = int64(ttl), renew
	return r, true
}

func leaseKey(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte(metaLeasePrefix), id) }

func leaseIDOf(key []byte) (uint64, bool) {
	if len(key) != len(metaLeasePrefix)+8 || !bytes.HasPrefix(key, []byte(metaLeasePrefix)) {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[len(metaLeasePrefix):]), true
}

// lessor is one node's view of the live leases' deadlines, on its own
// monotonic clock. mu is a leaf lock.
type lessor struct {
	mu       sync.Mutex
	deadline map[uint64]time.Time
	// record is the lease's record the deadline was counted from: expiry
	// swaps exactly it, so a keepalive applied after the deadline was
	// read (which changes the record) makes the expiry fail instead of
	// ending a lease just renewed.
	record map[uint64][]byte
	// stale is set while a reload has failed (see reload).
	stale atomic.Bool
	// reloadMu makes reloads (after a snapshot, on the FSM goroutine;
	// after a failed one, from expireLeases) run one after another, so
	// that the last one decides stale.
	reloadMu sync.Mutex
}

func newLessor() *lessor {
	return &lessor{deadline: map[uint64]time.Time{}, record: map[uint64][]byte{}}
}

// observe is the meta range's apply observer (on its FSM goroutine).
func (l *lessor) observe(key, value []byte, deleted bool, _ uint64) {
	id, ok := leaseIDOf(key)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noteLocked(id, value, deleted)
}

// noteLocked counts lease id's TTL from now, by its record value, or
// forgets the lease when it has ended.
func (l *lessor) noteLocked(id uint64, value []byte, deleted bool) {
	rec, ok := decodeLeaseRecord(value)
	if deleted || !ok || rec.state != leaseAlive {
		delete(l.deadline, id)
		delete(l.record, id)
		return
	}
	l.deadline[id] = time.Now().Add(time.Duration(rec.ttl) * time.Second)
	l.record[id] = bytes.Clone(value)
}

// remaining is how long lease id has left, by this node's count.
func (l *lessor) remaining(id uint64) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.deadline[id]
	if !ok {
		return 0, false
	}
	return max(time.Until(d), 0), true
}

// live counts the leases alive by this node's view.
func (l *lessor) live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.deadline)
}

// LiveLeases counts the live leases as this node's replica of the meta
// range has applied them (for metrics): 0 on a node without one.
func (n *Node) LiveLeases() int { return n.leases.live() }

// expiredLease is a lease past its deadline and the record it was
// counted from.
type expiredLease struct {
	id     uint64
	record []byte
}

// expired lists up to n leases whose deadline has passed.
func (l *lessor) expired(now time.Time, n int) []expiredLease {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []expiredLease
	for id, d := range l.deadline {
		if now.After(d) {
			out = append(out, expiredLease{id, l.record[id]})
			if len(out) >= n {
				break
			}
		}
	}
	return out
}

// loadLeases counts a full TTL from now for every live lease the meta
// range's state holds: after a restart nothing better is known, and
// counting less could expire a lease early. Called before the range's
// Raft starts.
func (l *lessor) load(f *raftstore.RangeFSM) error {
	start, end := []byte(metaLeasePrefix), PrefixEnd([]byte(metaLeasePrefix))
	for page := 0; page < 1<<20; page++ {
		kvs, more, next, _, err := f.Scan(start, end, 1000)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			l.observe(kv.Key, kv.Value, false, 0)
		}
		if !more {
			return nil
		}
		start = next
	}
	return errors.New("replication: lease scan did not end")
}

// reload forgets every lease and loads them again, a full TTL from now:
// after a snapshot replaced the meta range's state, what was observed
// before says nothing of what it holds now.
func (l *lessor) reload(f *raftstore.RangeFSM) error {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	l.mu.Lock()
	clear(l.deadline)
	clear(l.record)
	l.mu.Unlock()
	err := l.load(f)
	// Until a load succeeds, what the lessor holds may miss leases, which
	// would then never expire here: expireLeases loads again first.
	l.stale.Store(err != nil)
	return err
}

// resync replaces what the lessor holds of lease id, if it is still seen,
// with current (the record the state machine holds; nil when it has none),
// a full TTL from now when alive: the expiry of seen was refused, so the
// record changed in a way this node did not observe.
func (l *lessor) resync(id uint64, seen, current []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !bytes.Equal(l.record[id], seen) {
		return // observed meanwhile
	}
	l.noteLocked(id, current, current == nil)
}

// requireFeature refuses a request that would put log entries of a new
// kind into ranges some member's release cannot apply.
func (n *Node) requireFeature(ctx context.Context, feature string) error {
	t, err := n.routes.get(ctx)
	if err != nil {
		return err
	}
	for _, node := range t.Nodes {
		if node.State == NodeRemoved {
			continue
		}
		if !slices.Contains(node.Features, feature) {
			return fmt.Errorf("%w: node %s runs a release without %s; finish the upgrade first", ErrFeatureUnavailable, node.Id, feature)
		}
	}
	return nil
}

// readLease reads lease id's record on the meta leader s, linearizably.
func readLease(ctx context.Context, s *shard.Shard, id uint64) (leaseRecord, []byte, error) {
	if _, err := s.ReadIndex(ctx); err != nil {
		return leaseRecord{}, nil, err
	}
	return readLeaseLocal(s, id)
}

// readLeaseLocal reads lease id's record as the leader has applied it,
// which may lag what has committed: right for a compare-and-swap's
// expected value (a stale one only makes the swap fail), not for an
// answer.
func readLeaseLocal(s *shard.Shard, id uint64) (leaseRecord, []byte, error) {
	v, _, found, _, err := s.FSM().Get(leaseKey(id))
	if err != nil {
		return leaseRecord{}, nil, err
	}
	rec, ok := decodeLeaseRecord(v)
	if !found || !ok || rec.state != leaseAlive {
		return rec, v, fmt.Errorf("%w: lease %d", ErrLeaseNotFound, id)
	}
	return rec, v, nil
}

// swapLease replaces lease id's record old with rec on the meta leader.
// It reports false, and no error, when the record was not old any more.
func swapLease(ctx context.Context, s *shard.Shard, id uint64, old []byte, rec leaseRecord) (bool, error) {
	cmd := &raftstore.Command{Op: raftstore.OpCompareAndSwap, Key: leaseKey(id), Value: rec.encode(), Expected: old, ExpectMissing: old == nil}
	res, err := s.Propose(ctx, cmd)
	if errors.Is(err, shard.ErrCompareFailed) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if errors.Is(res.Err, raftstore.ErrCompareFailed) {
		return false, nil
	}
	return res.Err == nil, res.Err
}

func leaseClient(cc grpc.ClientConnInterface) kvpb.LeaseClient { return kvpb.NewLeaseClient(cc) }

// LeaseGrant grants a lease of req.Ttl seconds.
func (n *Node) LeaseGrant(ctx context.Context, req *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	if req.Ttl <= 0 || req.Ttl > maxLeaseTTL {
		return nil, fmt.Errorf("replication: lease TTL %d s outside 1..%d", req.Ttl, maxLeaseTTL)
	}
	if err := n.requireFeature(ctx, leaseFeature); err != nil {
		return nil, err
	}
	return metaDoConn(ctx, n, func(s *shard.Shard) (*kvpb.LeaseGrantResponse, error) {
		id, err := n.leaseIDs.take(ctx, s)
		if err != nil {
			return nil, err
		}
		ok, err := swapLease(ctx, s, id, nil, leaseRecord{ttl: req.Ttl})
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("replication: lease id %d already in use", id)
		}
		return &kvpb.LeaseGrantResponse{Id: int64(id), Ttl: req.Ttl}, nil
	}, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseGrantResponse, error) {
		return leaseClient(cc).Grant(ctx, req)
	})
}

// LeaseKeepAlive renews one lease once. ErrLeaseNotFound when the lease
// has ended. A Lease.KeepAlive stream renews through a KeepAliveSession.
func (n *Node) LeaseKeepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	return n.leaseKeepAlive(ctx, req, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseKeepAliveResponse, error) {
		stream, err := leaseClient(cc).KeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(req); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		stream.CloseSend()
		return resp, err
	})
}

// leaseKeepAlive renews req's lease on the meta leader: here, or through
// remote on the leader's connection.
func (n *Node) leaseKeepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest, remote func(context.Context, grpc.ClientConnInterface) (*kvpb.LeaseKeepAliveResponse, error)) (*kvpb.LeaseKeepAliveResponse, error) {
	return metaDoConn(ctx, n, func(s *shard.Shard) (*kvpb.LeaseKeepAliveResponse, error) {
		id := uint64(req.Id)
		var confirmed bool
		var confirmedRenew uint64
		for attempt := 0; attempt < 8; attempt++ {
			// The swap checks the record itself, so the first try needs no
			// read-index round; a refusal or a miss is confirmed with one.
			rec, old, err := readLeaseLocal(s, id)
			if err != nil || attempt > 0 {
				rec, old, err = readLease(ctx, s, id)
				if err == nil && confirmed && rec.renew > confirmedRenew {
					// Another renewal committed past a read index taken
					// after this request arrived: no replica applied it
					// before then, so every one counts the TTL from later
					// than this request. It renewed the lease for both.
					return &kvpb.LeaseKeepAliveResponse{Id: req.Id, Ttl: rec.ttl}, nil
				}
				if err == nil && !confirmed {
					confirmed, confirmedRenew = true, rec.renew
				}
			}
			if err != nil {
				return nil, err
			}
			next := rec
			next.renew++
			ok, err := swapLease(ctx, s, id, old, next)
			if err != nil {
				return nil, err
			}
			if ok {
				return &kvpb.LeaseKeepAliveResponse{Id: req.Id, Ttl: rec.ttl}, nil
			}
			// Another keepalive (or the end) committed in between.
		}
		// Every swap was refused, so nothing was applied.
		return nil, fmt.Errorf("%w: lease %d: keepalives kept colliding", shard.ErrCompareFailed, id)
	}, remote)
}

// keepAliveSession serves the keepalives of one Lease.KeepAlive stream, one
// at a time, as the stream's handler calls it. On a node that does not
// lead the meta range they go to the one that does, and the session keeps
// the stream it forwarded them on open for the next: opening a gRPC stream
// per keepalive cost the meta leader more than the renewal itself (a
// fifth of its CPU while 64 streams renewed, session 13).
type keepAliveSession struct {
	n   *Node
	ctx context.Context // the client stream's: the forward stream ends with it

	fwd    kvpb.Lease_KeepAliveClient // nil until a keepalive is forwarded
	target *grpc.ClientConn           // the connection fwd runs on
	cancel context.CancelFunc
}

// KeepAliveSession returns the renewal of a Lease.KeepAlive stream whose
// context is ctx, and what to call when the stream ends.
func (n *Node) KeepAliveSession(ctx context.Context) (renew func(context.Context, *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error), done func()) {
	k := &keepAliveSession{n: n, ctx: ctx}
	return k.keepAlive, k.drop
}

func (k *keepAliveSession) drop() {
	if k.cancel != nil {
		k.cancel()
	}
	k.fwd, k.target, k.cancel = nil, nil, nil
}

func (k *keepAliveSession) keepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	if ctx.Err() != nil {
		return nil, deadlineStatus(ctx) // before anything is sent: the stream stays good
	}
	if k.fwd != nil && k.forwardsToLeader() {
		resp, err := k.onStream(ctx, req)
		if err == nil {
			return resp, nil
		}
		k.drop()
		// Renewing twice is harmless: a keepalive that may have reached
		// the leader is sent again the usual way unless the leader
		// answered it.
		if !keepAliveRetryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
	k.drop()
	return k.n.leaseKeepAlive(ctx, req, func(fctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseKeepAliveResponse, error) {
		// The stream lives as long as the client's, with the forwarding
		// marks of this request.
		md, _ := metadata.FromOutgoingContext(fctx)
		sctx, cancel := context.WithCancel(metadata.NewOutgoingContext(k.ctx, md))
		// Opening the stream is bounded by this keepalive's deadline.
		stop := context.AfterFunc(ctx, cancel)
		stream, err := leaseClient(cc).KeepAlive(sctx)
		if !stop() {
			cancel()
			return nil, deadlineStatus(ctx)
		}
		if err != nil {
			cancel()
			return nil, err
		}
		k.fwd, k.cancel = stream, cancel
		k.n.keepAliveStreams.Add(1)
		if rc, ok := cc.(*recordingConn); ok {
			k.target, _ = rc.cc.(*grpc.ClientConn)
		}
		resp, err := k.onStream(ctx, req)
		if err != nil {
			k.drop()
		}
		return resp, err
	})
}

// forwardsToLeader reports whether the open forward stream still goes to
// the meta leader as this node sees it (when it sees one at all).
func (k *keepAliveSession) forwardsToLeader() bool {
	var addr string
	if s := k.n.shardByID(raftstore.MetaRangeID); s != nil {
		if s.IsLeader() {
			return false
		}
		_, addr = s.Leader()
	} else {
		// No replica of its own: the routing table names the leader.
		addr = k.n.routes.metaLeaderAddr()
	}
	if addr == "" {
		return true // nothing better known: the far end forwards if it must
	}
	conn, err := k.n.peer(addr)
	return err == nil && conn == k.target
}

// onStream sends req on the forward stream and waits for its answer, or
// for ctx (then the stream is dropped: its next answer would be this one).
func (k *keepAliveSession) onStream(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	fwd := k.fwd
	if err := fwd.Send(req); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream has ended; Recv says how.
			_, err = fwd.Recv()
		}
		return nil, err
	}
	type answer struct {
		resp *kvpb.LeaseKeepAliveResponse
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		resp, err := fwd.Recv()
		ch <- answer{resp, err}
	}()
	select {
	case a := <-ch:
		return a.resp, a.err
	case <-ctx.Done():
		k.drop() // ends the stream, so Recv returns
		<-ch
		return nil, deadlineStatus(ctx)
	}
}

// deadlineStatus is ctx's end as the gRPC status a forwarded call that ran
// out of time has (DEADLINE_EXCEEDED or CANCELLED), not a write of unknown
// outcome: clients move to another node on it, and renewing twice is
// harmless.
func deadlineStatus(ctx context.Context) error {
	return status.FromContextError(ctx.Err()).Err()
}

// keepAliveRetryable reports whether a forwarded keepalive that failed on
// its stream may go again by another way: the stream broke, or its far end
// no longer leads the meta range. Any other answer is the leader's.
func keepAliveRetryable(err error) bool {
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonNotLeader, rpctypes.ReasonNoLeader, rpctypes.ReasonShuttingDown:
		return true
	case "":
		return errors.Is(err, io.EOF) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.Canceled
	}
	return false
}

// endLease marks lease id ended (cause) on the meta leader, then deletes
// its keys everywhere. only, when set, is the record the caller saw: the
// end happens only if the lease was not renewed since (expiry).
func (n *Node) endLease(ctx context.Context, s *shard.Shard, id uint64, cause raftstore.DeleteCause, only []byte) (bool, error) {
	old := only
	var rec leaseRecord
	if old == nil {
		var err error
		if rec, old, err = readLease(ctx, s, id); err != nil {
			return false, err
		}
	} else {
		var ok bool
		if rec, ok = decodeLeaseRecord(old); !ok {
			return false, fmt.Errorf("replication: lease %d: undecodable record", id)
		}
	}
	rec.state = leaseRevoked
	if cause == raftstore.CauseLeaseExpired {
		rec.state = leaseExpired
	}
	return swapLease(ctx, s, id, old, rec)
}

// LeaseRevoke ends a lease and deletes its keys. The meta range's leader
// does both, so the call goes there. It answers once every range is known
// to hold none of the lease's keys (clearLeaseKeys): a read that starts
// after the answer never finds one.
func (n *Node) LeaseRevoke(ctx context.Context, req *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	if err := n.requireFeature(ctx, leaseFeature); err != nil {
		return nil, err
	}
	return metaDoConn(ctx, n, func(s *shard.Shard) (*kvpb.LeaseRevokeResponse, error) {
		for attempt := 0; attempt < 8; attempt++ {
			ok, err := n.endLease(ctx, s, uint64(req.Id), raftstore.CauseLeaseRevoked, nil)
			if errors.Is(err, ErrLeaseNotFound) {
				return nil, n.finishEndedLease(ctx, s, uint64(req.Id), err)
			}
			if err != nil {
				return nil, err
			}
			if ok {
				cctx, cancel := clearContext(ctx)
				deleted, err := n.clearLeaseKeys(cctx, uint64(req.Id), raftstore.CauseLeaseRevoked, clearRounds, true)
				cancel()
				if err != nil {
					return nil, err
				}
				return &kvpb.LeaseRevokeResponse{KeysDeleted: deleted}, nil
			}
		}
		// Every swap was refused, so nothing was applied.
		return nil, fmt.Errorf("%w: lease %d: keepalives kept colliding with the revoke", shard.ErrCompareFailed, req.Id)
	}, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseRevokeResponse, error) {
		return leaseClient(cc).Revoke(ctx, req)
	})
}

func causePB(c raftstore.DeleteCause) kvpb.DeleteCause {
	switch c {
	case raftstore.CauseLeaseExpired:
		return kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED
	case raftstore.CauseLeaseRevoked:
		return kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED
	}
	return kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED
}

func causeOf(c kvpb.DeleteCause) raftstore.DeleteCause {
	if c == kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED {
		return raftstore.CauseLeaseExpired
	}
	return raftstore.CauseLeaseRevoked
}

// LeaseList lists the live leases.
func (n *Node) LeaseList(ctx context.Context, req *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	return metaDoConn(ctx, n, func(s *shard.Shard) (*kvpb.LeaseListResponse, error) {
		if _, err := s.ReadIndex(ctx); err != nil {
			return nil, err
		}
		kvs, err := metaScanLocal(s, []byte(metaLeasePrefix))
		if err != nil {
			return nil, err
		}
		resp := &kvpb.LeaseListResponse{}
		for _, kv := range kvs.Kvs {
			id, ok := leaseIDOf(kv.Key)
			rec, ok2 := decodeLeaseRecord(kv.Value)
			if !ok || !ok2 || rec.state != leaseAlive {
				continue
			}
			left, _ := n.leases.remaining(id)
			resp.Leases = append(resp.Leases, &kvpb.LeaseStatus{Id: int64(id), GrantedTtl: rec.ttl, Ttl: ceilSeconds(left)})
		}
		return resp, nil
	}, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseListResponse, error) {
		return leaseClient(cc).List(ctx, req)
	})
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

// LeaseTimeToLive reports a lease's TTL and, on request, its keys.
func (n *Node) LeaseTimeToLive(ctx context.Context, req *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	resp, err := metaDoConn(ctx, n, func(s *shard.Shard) (*kvpb.LeaseTimeToLiveResponse, error) {
		rec, _, err := readLease(ctx, s, uint64(req.Id))
		if err != nil {
			return nil, err
		}
		left, _ := n.leases.remaining(uint64(req.Id))
		return &kvpb.LeaseTimeToLiveResponse{Id: req.Id, GrantedTtl: rec.ttl, Ttl: ceilSeconds(left)}, nil
	}, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseTimeToLiveResponse, error) {
		return leaseClient(cc).TimeToLive(ctx, &kvpb.LeaseTimeToLiveRequest{Id: req.Id})
	})
	if err != nil || !req.Keys {
		return resp, err
	}
	keys, err := n.allLeaseKeys(ctx, uint64(req.Id))
	if err != nil {
		return nil, err
	}
	resp.Keys = keys
	return resp, nil
}

// allLeaseKeys gathers a lease's keys from every node's replicas.
func (n *Node) allLeaseKeys(ctx context.Context, id uint64) ([][]byte, error) {
	t, err := n.routes.get(ctx)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out [][]byte
	for _, node := range t.Nodes {
		if node.State == NodeRemoved {
			continue
		}
		var resp *kvpb.LeaseKeysResponse
		if node.Id == n.cfg.NodeID {
			resp, err = n.LeaseKeys(ctx, &kvpb.LeaseKeysRequest{Id: int64(id)})
		} else if conn, cerr := n.peer(node.RaftAddr); cerr != nil {
			err = cerr
		} else {
			resp, err = kvpb.NewInternalClient(conn).LeaseKeys(ctx, &kvpb.LeaseKeysRequest{Id: int64(id)})
		}
		if err != nil {
			continue // another replica of its ranges answers
		}
		for _, k := range resp.Keys {
			if !seen[string(k)] {
				seen[string(k)] = true
				out = append(out, k)
			}
		}
	}
	slices.SortFunc(out, bytes.Compare)
	return out, nil
}

// revokeInRange commits an OpLeaseRevoke in range s through its leader,
// and returns the keys it deleted and the span it covered: nil when the
// range split or merged while the revoke was applied, or a leader of the
// previous release answered.
func (n *Node) revokeInRange(ctx context.Context, s *shard.Shard, id uint64, cause raftstore.DeleteCause) (int, *kvpb.RangeDescriptor, error) {
	if s.Asleep() {
		s.Wake()
	}
	cmd := &raftstore.Command{Op: raftstore.OpLeaseRevoke, Lease: id, Cause: cause}
	for range 3 {
		d := s.Descriptor()
		res, fwd, err := n.propose(ctx, s, cmd)
		if !fwd {
			if err != nil {
				return 0, nil, err
			}
			if s.Descriptor().Generation != d.Generation || !leaseGone(s, id) {
				return res.Deleted, nil, nil
			}
			return res.Deleted, spanPB(d, nil), nil
		}
		if s.IsLeader() {
			continue // won an election since: propose here
		}
		resp, err := forward(ctx, n, s, true, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.LeaseRevokeLocalResponse, error) {
			return kvpb.NewInternalClient(cc).LeaseRevokeLocal(ctx, &kvpb.LeaseRevokeLocalRequest{Id: int64(id), Cause: causePB(cause), RangeId: s.ID()})
		})
		if errors.Is(err, errLeaderIsSelf) {
			continue // a range woken here elected this replica
		}
		if err != nil {
			return 0, nil, err
		}
		for _, c := range resp.Cleared {
			if c.Id == s.ID() {
				return int(resp.KeysDeleted), c, nil
			}
		}
		return int(resp.KeysDeleted), nil, nil
	}
	return 0, nil, fmt.Errorf("%w: range %d: leadership moved during a lease's revoke", shard.ErrNotLeader, s.ID())
}

// leaseLeft reports what s, as applied here, still holds of lease id: a
// transaction's lock with a write attached to it (the key appears when
// the lock resolves), and its keys. The locks are read first, so a lock
// resolving in between shows up as a key.
func leaseLeft(s *shard.Shard, id uint64) (locked, keys bool, err error) {
	locked = s.FSM().LeaseLocked(id)
	k, err := s.FSM().LeaseKeys(id)
	return locked, len(k) > 0, err
}

// leaseGone reports whether s holds nothing of lease id (leaseLeft).
func leaseGone(s *shard.Shard, id uint64) bool {
	locked, keys, err := leaseLeft(s, id)
	return err == nil && !locked && !keys
}

// LeaseKeys lists a lease's keys in this node's replicas (Internal.LeaseKeys).
func (n *Node) LeaseKeys(ctx context.Context, req *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error) {
	resp := &kvpb.LeaseKeysResponse{}
	for _, s := range n.Shards() {
		if s.ID() == raftstore.MetaRangeID {
			continue
		}
		keys, err := s.FSM().LeaseKeys(uint64(req.Id))
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, keys...)
	}
	return resp, nil
}

// checkLeaseForPut refuses a put with a lease that is not alive (a
// linearizable read of the meta range). It runs where the put is
// proposed, registered in leaseWrites before it, so that a revoke racing
// the put waits for its entry.
func (n *Node) checkLeaseForPut(ctx context.Context, id int64) error {
	if err := n.requireFeature(ctx, leaseFeature); err != nil {
		return err
	}
	_, err := n.LeaseTimeToLive(ctx, &kvpb.LeaseTimeToLiveRequest{Id: id})
	return err
}

// leaseChecked runs the test hook held between a write's lease check
// and its proposal, if one is set.
func (n *Node) leaseChecked() {
	if h := n.afterLeaseCheck.Load(); h != nil {
		(*h)()
	}
}

// checkLeasesForPut is checkLeaseForPut for each of ids.
func (n *Node) checkLeasesForPut(ctx context.Context, ids []uint64) error {
	for _, id := range ids {
		if err := n.checkLeaseForPut(ctx, int64(id)); err != nil {
			return err
		}
	}
	return nil
}

// leaseLoop expires leases (on the meta range leader) and sweeps the
// ranges this node leads for keys of ended leases.
func (n *Node) leaseLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(leaseTick)
	defer tick.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if s := n.localMetaLeader(); s != nil {
			n.expireLeases(s)
		}
		if time.Since(lastSweep) >= leaseSweepEvery {
			lastSweep = time.Now()
			n.sweepLeaseKeys()
		}
	}
}

// expireLeases ends the leases whose deadline passed on this node's clock.
func (n *Node) expireLeases(s *shard.Shard) {
	if n.leases.stale.Load() {
		if err := n.leases.reload(s.FSM()); err != nil {
			n.log.Warn("leases not read again yet; none expires meanwhile", "err", err)
			return
		}
	}
	for _, exp := range n.leases.expired(time.Now(), leaseExpireAtOnce) {
		id := exp.id
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		// Swap the record the deadline was counted from, never the one
		// the state machine holds now: a keepalive applied since then has
		// changed it, and the swap must fail.
		ok, err := n.endLease(ctx, s, id, raftstore.CauseLeaseExpired, exp.record)
		if err == nil && !ok {
			// Refused: the record changed. An observed keepalive has
			// moved the deadline already; anything else (a snapshot
			// this node did not see applied) is read again here, so that
			// the lease is not tried again every tick.
			if _, cur, rerr := readLeaseLocal(s, id); rerr == nil || errors.Is(rerr, ErrLeaseNotFound) {
				if rerr != nil {
					cur = nil
				}
				n.leases.resync(id, exp.record, cur)
			}
		}
		if err == nil {
			if ok {
				n.log.Debug("lease expired", "lease", id)
				select {
				case n.expiryClears <- struct{}{}:
					go func() {
						defer func() { <-n.expiryClears }()
						ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
						defer cancel()
						// One round: what it leaves, the ranges' sweeps delete.
						if _, err := n.clearLeaseKeys(ctx, id, raftstore.CauseLeaseExpired, 1, false); err != nil {
							n.log.Info("keys of an expired lease left to the sweeps", "lease", id, "err", err)
						}
					}()
				default:
					n.log.Debug("keys of an expired lease left to the sweeps: many expiring at once", "lease", id)
				}
			}
		}
		cancel()
		if err != nil {
			n.log.Info("lease expiry deferred", "lease", id, "err", err)
			return
		}
	}
}

// sweepLeaseKeys deletes, in the ranges this node leads (or led when they
// went to sleep), keys attached to leases that have ended. A sleeping
// range is woken only when it holds such a key.
func (n *Node) sweepLeaseKeys() {
	type rangeLeases struct {
		s   *shard.Shard
		ids []uint64
	}
	var todo []rangeLeases
	for _, s := range n.Shards() {
		if s.ID() == raftstore.MetaRangeID {
			continue
		}
		if _, leader, _, asleep := s.Sleeping(); asleep {
			if leader != n.cfg.NodeID {
				continue
			}
		} else if !s.IsLeader() {
			continue
		}
		ids, err := s.FSM().Leases()
		if err == nil && len(ids) > 0 {
			todo = append(todo, rangeLeases{s, ids})
		}
	}
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte("lease/")})
	if err != nil {
		return
	}
	var next uint64
	ended := map[uint64]raftstore.DeleteCause{}
	alive := map[uint64]bool{}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == metaLeaseNext && len(kv.Value) == 8 {
			next = binary.BigEndian.Uint64(kv.Value)
			continue
		}
		id, ok := leaseIDOf(kv.Key)
		rec, ok2 := decodeLeaseRecord(kv.Value)
		switch {
		case !ok || !ok2:
		case rec.state == leaseAlive:
			alive[id] = true
		case rec.state == leaseExpired:
			ended[id] = raftstore.CauseLeaseExpired
		default:
			ended[id] = raftstore.CauseLeaseRevoked
		}
	}
	for _, r := range todo {
		for _, id := range r.ids {
			cause, dead := ended[id]
			if !dead && !alive[id] && id <= next {
				dead, cause = true, raftstore.CauseLeaseRevoked // its record is gone
			}
			if !dead {
				continue
			}
			if k, err := r.s.FSM().LeaseKeys(id); err != nil || len(k) == 0 {
				continue
			}
			if deleted, _, err := n.revokeInRange(ctx, r.s, id, cause); err == nil && deleted > 0 {
				n.log.Info("swept keys of an ended lease", "lease", id, "range", r.s.ID(), "keys", deleted)
			}
		}
	}
}
