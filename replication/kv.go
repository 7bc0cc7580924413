package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// sessionWait bounds how long a session read waits for this replica to
// apply the session's index before refusing, so the client can try a
// replica that is further along.
const sessionWait = time.Second

// route runs local on this node's replica of the range holding key, or
// sends the request with remote to a node that has one. A key that a split
// moved away while the request was on its way is routed once more, and so
// is a request whose forwarding found this replica had become the leader.
// Each such retry follows a split or a change of leader, so a few suffice;
// a range just woken from hibernation can change leader more than once
// while its replicas wake.
func route[T any](ctx context.Context, n *Node, key []byte, local func(*shard.Shard) (T, error), remote func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	var last error
	for attempt := 0; attempt < 8; attempt++ {
		s, err := n.localShard(key)
		if err != nil {
			return forwardRemote(ctx, n, key, remote)
		}
		resp, err := local(s)
		if errors.Is(err, raftstore.ErrWrongRange) || errors.Is(err, errLeaderIsSelf) {
			last = err
			continue
		}
		return resp, err
	}
	if errors.Is(last, errLeaderIsSelf) {
		// Leadership changed under every attempt: an election is on.
		return zero, fmt.Errorf("%w: leadership of the range holding key %q changed during the request", shard.ErrNotLeader, key)
	}
	return zero, fmt.Errorf("%w: key %q moved between ranges repeatedly", ErrKeyOutOfRange, key)
}

// errLeaderIsSelf tells route to run the request locally again: this
// replica won an election between checking and forwarding.
// It wraps shard.ErrNotLeader so that, should it ever reach a client, the
// client hears a refusal it retries, never an internal error.
var errLeaderIsSelf = fmt.Errorf("%w: this replica became the leader", shard.ErrNotLeader)

// forward sends a request to the range leader's internal gRPC service.
// Errors from the leader come back as its gRPC status and pass through.
// A transport failure that proves the request never left
// (rpctypes.NeverSent: the leader's connection was refused) waits for the
// next leader and tries again;
// any other transport failure is, for a write, of unknown outcome
// (ErrIndeterminate) and, for a read, the range being unreachable
// (ErrNoLeader). A call cut off by the request's deadline returns the
// context's error (wrapped in ErrIndeterminate for a write): the deadline
// passed, which says nothing about the range's leader. Only when no
// leader was known for the whole wait is it ErrNoLeader.
func forward[T any](ctx context.Context, n *Node, s *shard.Shard, write bool, call func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	if hops(ctx) >= maxHops {
		return zero, shard.ErrNotLeader
	}
	for attempt := 0; attempt < 50; attempt++ {
		id, addr, err := s.ForwardTarget(ctx)
		if err != nil {
			return zero, fmt.Errorf("%w for range %d: %w", ErrNoLeader, s.ID(), err)
		}
		if id == n.cfg.NodeID {
			// We became leader while deciding to forward: serve it here.
			return zero, errLeaderIsSelf
		}
		conn, err := n.peer(addr)
		if err != nil {
			return zero, err
		}
		rc := &recordingConn{cc: conn}
		resp, err := call(forwardContext(ctx), rc)
		if err == nil || rpctypes.InfoOf(err) != nil {
			return resp, err
		}
		if ctx.Err() != nil {
			// The request's own deadline ended the call: that is what the
			// client must hear, not that the range has no leader (which it
			// would retry). A write may have reached the leader.
			if write {
				return zero, fmt.Errorf("%w: forwarding to the leader of range %d: %w", shard.ErrIndeterminate, s.ID(), ctx.Err())
			}
			// Unless the replica has meanwhile lost its leader: then the
			// range is unavailable from here (a cut-off minority), which
			// docs/consistency.md promises as UNAVAILABLE.
			if leader, _ := s.Leader(); leader == "" {
				return zero, fmt.Errorf("%w for range %d: %w", ErrNoLeader, s.ID(), ctx.Err())
			}
			return zero, fmt.Errorf("forwarding to the leader of range %d: %w", s.ID(), ctx.Err())
		}
		if !rc.neverSent(err) {
			if write {
				return zero, fmt.Errorf("%w: forwarding to the leader of range %d failed: %w", shard.ErrIndeterminate, s.ID(), err)
			}
			return zero, fmt.Errorf("%w for range %d: forwarding failed: %w", ErrNoLeader, s.ID(), err)
		}
		// The leader we know of is down: wait for Raft to notice and
		// elect another, then try again.
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		s.WaitLeaderChange(wctx, id)
		cancel()
		if ctx.Err() != nil {
			return zero, fmt.Errorf("%w for range %d: %w", ErrNoLeader, s.ID(), ctx.Err())
		}
	}
	return zero, fmt.Errorf("%w for range %d: leader unreachable", ErrNoLeader, s.ID())
}

// recordingConn records, with grpc.Peer, whether its last call was handed
// to a transport, so that rpctypes.NeverSent can tell a request that never
// left from one that may have reached the peer. One call at a time.
type recordingConn struct {
	cc   grpc.ClientConnInterface
	peer peer.Peer
}

func (c *recordingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.peer = peer.Peer{}
	return c.cc.Invoke(ctx, method, args, reply, append(opts[:len(opts):len(opts)], grpc.Peer(&c.peer))...)
}

func (c *recordingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.peer = peer.Peer{}
	return c.cc.NewStream(ctx, desc, method, append(opts[:len(opts):len(opts)], grpc.Peer(&c.peer))...)
}

// neverSent reports whether err, from the last call, proves the request
// never left this node.
func (c *recordingConn) neverSent(err error) bool { return rpctypes.NeverSent(err, &c.peer) }

// propose commits cmd on the local leader, or forwards via fwd when this
// replica is not the leader.
func (n *Node) propose(ctx context.Context, s *shard.Shard, cmd *raftstore.Command) (*raftstore.Result, bool, error) {
	return n.proposeLeased(ctx, s, cmd, nil)
}

// proposeLeased is propose for a write counted in lw (leaseWrites) until
// its entry settles.
func (n *Node) proposeLeased(ctx context.Context, s *shard.Shard, cmd *raftstore.Command, lw *leaseWrite) (*raftstore.Result, bool, error) {
	if !s.IsLeader() {
		return nil, true, nil
	}
	settle, ok := lw.propose()
	if !ok {
		return nil, false, lw.endedErr()
	}
	res, err := s.ProposeSettled(ctx, cmd, settle)
	if errors.Is(err, shard.ErrNotLeader) {
		return nil, true, nil
	}
	return res, false, err
}

func (n *Node) writeHeader(s *shard.Shard, rev uint64) *kvpb.WriteHeader {
	return &kvpb.WriteHeader{
		ServedBy:     n.cfg.NodeID,
		RangeId:      s.ID(),
		Revision:     rev,
		SessionToken: sessionToken{s.ID(): rev}.String(),
	}
}

// Put writes a key through the range's Raft log.
func (n *Node) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.PutResponse, error) {
		return kvpb.NewKVClient(conn).Put(ctx, req)
	}
	return route(ctx, n, req.Key, func(s *shard.Shard) (*kvpb.PutResponse, error) {
		cmd := &raftstore.Command{Op: raftstore.OpPut, Key: req.Key, Value: req.Value}
		var lw *leaseWrite
		if req.Lease != 0 {
			// Checked where the put is proposed, once, and counted from
			// before the check (leaseWrites).
			if !s.IsLeader() {
				return forward(ctx, n, s, true, remote)
			}
			lw = n.leaseWrites.begin(uint64(req.Lease))
			defer lw.release()
			if err := n.checkLeaseForPut(ctx, req.Lease); err != nil {
				return nil, err
			}
			n.leaseChecked()
			cmd.Op, cmd.Lease = raftstore.OpPutLease, uint64(req.Lease)
		}
		res, fwd, err := n.proposeMeeting(ctx, s, cmd, lw)
		if fwd {
			return forward(ctx, n, s, true, remote)
		}
		if err != nil {
			return nil, err
		}
		return &kvpb.PutResponse{Header: n.writeHeader(s, res.Revision)}, nil
	}, remote)
}

// Delete removes a key through the range's Raft log.
func (n *Node) Delete(ctx context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.DeleteResponse, error) {
		return kvpb.NewKVClient(conn).Delete(ctx, req)
	}
	return route(ctx, n, req.Key, func(s *shard.Shard) (*kvpb.DeleteResponse, error) {
		res, fwd, err := n.proposeMeeting(ctx, s, &raftstore.Command{Op: raftstore.OpDelete, Key: req.Key}, nil)
		if fwd {
			return forward(ctx, n, s, true, remote)
		}
		if err != nil {
			return nil, err
		}
		return &kvpb.DeleteResponse{Header: n.writeHeader(s, res.Revision), Deleted: res.Existed}, nil
	}, remote)
}

// CompareAndSwap writes new_value if the key's value matches.
func (n *Node) CompareAndSwap(ctx context.Context, req *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.CompareAndSwapResponse, error) {
		return kvpb.NewKVClient(conn).CompareAndSwap(ctx, req)
	}
	return route(ctx, n, req.Key, func(s *shard.Shard) (*kvpb.CompareAndSwapResponse, error) {
		cmd := &raftstore.Command{Op: raftstore.OpCompareAndSwap, Key: req.Key, Value: req.NewValue, Expected: req.ExpectedValue, ExpectMissing: req.ExpectMissing}
		res, fwd, err := n.proposeMeeting(ctx, s, cmd, nil)
		if fwd {
			return forward(ctx, n, s, true, remote)
		}
		if err != nil {
			return nil, err
		}
		return &kvpb.CompareAndSwapResponse{Header: n.writeHeader(s, res.Revision)}, nil
	}, remote)
}

// readPlan is how a read will be served on this replica.
type readPlan struct {
	level       kvpb.Consistency
	stalenessMS int64
	token       sessionToken
	// What a read explanation (ReadOptions.explain) tells.
	explain      bool
	hops         int           // how many times the request was forwarded
	readIndex    uint64        // linearizable: the index a quorum confirmed
	maxStaleness time.Duration // bounded: what was asked
}

// prepareRead decides whether this replica may serve a read at the asked
// level and waits for whatever that requires. forward is true when only
// the leader may serve it and this replica is not the leader.
// span is the keys the read covers, which a session read checks against
// the ranges its token names (see sessionReady).
func (n *Node) prepareRead(ctx context.Context, s *shard.Shard, opts *kvpb.ReadOptions, span readSpan) (plan readPlan, forward bool, err error) {
	plan.level = opts.GetConsistency()
	if plan.explain = opts.GetExplain(); plan.explain {
		plan.hops = hops(ctx)
	}
	if plan.level == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		plan.level = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	}
	if plan.token, err = parseSessionToken(opts.GetSessionToken(), n.sessionLimit); err != nil {
		return plan, false, err
	}
	if plan.level == kvpb.Consistency_CONSISTENCY_STALE && !s.Recovered() {
		// Before a restart this replica may have served state it has not
		// re-applied yet: answering now could go backwards. (Bounded and
		// session reads wait for an index the leader or the token names,
		// which is never below what was served before.)
		return plan, false, fmt.Errorf("%w: range %d on %s is re-applying its log after a restart (applied %d)", ErrStaleReplica, s.ID(), n.cfg.NodeID, s.FSM().AppliedIndex())
	}
	if plan.level != kvpb.Consistency_CONSISTENCY_STALE && s.Asleep() {
		// Only stale reads may be served by a hibernating replica: it
		// cannot know whether the range woke elsewhere and moved on.
		s.Wake()
	}
	switch plan.level {
	case kvpb.Consistency_CONSISTENCY_LINEARIZABLE:
		if !s.IsLeader() {
			return plan, true, nil
		}
		if plan.readIndex, err = s.ReadIndex(ctx); err != nil {
			if errors.Is(err, shard.ErrNotLeader) {
				return plan, true, nil
			}
			return plan, false, err
		}
	case kvpb.Consistency_CONSISTENCY_BOUNDED:
		plan.maxStaleness = opts.GetMaxStaleness().AsDuration()
		age, err := n.boundedStaleness(ctx, s, plan.maxStaleness)
		if err != nil {
			return plan, false, err
		}
		plan.stalenessMS = stalenessMS(age, true)
	case kvpb.Consistency_CONSISTENCY_SESSION:
		if err := n.sessionReady(ctx, s, plan.token, span); err != nil {
			return plan, false, err
		}
		n.fresh.touch(s.ID(), time.Now())
		plan.stalenessMS = stalenessMS(s.Staleness(time.Now()))
	case kvpb.Consistency_CONSISTENCY_STALE:
		n.fresh.touch(s.ID(), time.Now())
		plan.stalenessMS = stalenessMS(s.Staleness(time.Now()))
	default:
		return plan, false, fmt.Errorf("replication: unknown consistency level %d", plan.level)
	}
	return plan, false, nil
}

func (n *Node) readHeader(s *shard.Shard, plan readPlan, applied uint64) *kvpb.ReadHeader {
	h := &kvpb.ReadHeader{
		ServedBy:     n.cfg.NodeID,
		RangeId:      s.ID(),
		AppliedIndex: applied,
		Consistency:  plan.level,
		StalenessMs:  plan.stalenessMS,
		SessionToken: plan.token.With(s.ID(), applied).String(),
	}
	if plan.explain {
		h.Explain = n.explainRead(s, plan, applied)
	}
	return h
}

// ErrKeyNotFound is returned by Get for a missing key.
var ErrKeyNotFound = errors.New("replication: key not found")

// Get reads one key at the requested consistency level.
func (n *Node) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.GetResponse, error) {
		return kvpb.NewKVClient(conn).Get(ctx, req)
	}
	return route(ctx, n, req.Key, func(s *shard.Shard) (*kvpb.GetResponse, error) {
		plan, fwd, err := n.prepareRead(ctx, s, req.Read, readSpan{start: req.Key, point: true})
		if fwd {
			return forward(ctx, n, s, false, remote)
		}
		if err != nil {
			return nil, err
		}
		if plan.level == kvpb.Consistency_CONSISTENCY_LINEARIZABLE {
			if err := n.resolveCommittedIn(ctx, s, req.Key, append(bytes.Clone(req.Key), 0)); err != nil {
				return nil, err
			}
		}
		value, rev, found, applied, err := s.FSM().Get(req.Key)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, &NotFoundError{Header: n.readHeader(s, plan, applied)}
		}
		return &kvpb.GetResponse{
			Header: n.readHeader(s, plan, applied),
			Kv:     &kvpb.KeyValue{Key: req.Key, Value: value, Revision: rev},
		}, nil
	}, remote)
}

// NotFoundError is a Get of a missing key; it still says who answered.
type NotFoundError struct {
	Header *kvpb.ReadHeader
}

func (e *NotFoundError) Error() string { return ErrKeyNotFound.Error() }
func (e *NotFoundError) Unwrap() error { return ErrKeyNotFound }

// DefaultScanLimit applies when a scan names no limit.
const DefaultScanLimit = 1000

// Scan reads keys in [start, end) of the range that holds start. When the
// range ends before end, the response says more and gives the range's end
// as next_key, so a client resumes in the next range.
func (n *Node) Scan(ctx context.Context, req *kvpb.ScanRequest) (*kvpb.ScanResponse, error) {
	start, end := req.Start, req.End
	if len(end) == 0 {
		// No end is nil to the state machine: an empty, non-nil end (what
		// an HTTP scan without ?end= passed) matched no key at all on the
		// replica that served the scan itself, while a forwarded request
		// (where protobuf makes it nil) matched every key.
		end = nil
	}
	if len(req.Prefix) > 0 {
		start, end = req.Prefix, PrefixEnd(req.Prefix)
	}
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.ScanResponse, error) {
		return kvpb.NewKVClient(conn).Scan(ctx, req)
	}
	return route(ctx, n, start, func(s *shard.Shard) (*kvpb.ScanResponse, error) {
		plan, fwd, err := n.prepareRead(ctx, s, req.Read, readSpan{start: start, end: end})
		if fwd {
			return forward(ctx, n, s, false, remote)
		}
		if err != nil {
			return nil, err
		}
		if plan.level == kvpb.Consistency_CONSISTENCY_LINEARIZABLE {
			if err := n.resolveCommittedIn(ctx, s, start, end); err != nil {
				return nil, err
			}
		}
		limit := int(req.Limit)
		if limit <= 0 {
			limit = DefaultScanLimit
		}
		kvs, more, next, applied, err := s.FSM().Scan(start, end, limit)
		if err != nil {
			return nil, err
		}
		resp := &kvpb.ScanResponse{Header: n.readHeader(s, plan, applied), More: more, NextKey: next, Kvs: make([]*kvpb.KeyValue, len(kvs))}
		for i, kv := range kvs {
			resp.Kvs[i] = &kvpb.KeyValue{Key: kv.Key, Value: kv.Value, Revision: kv.Revision}
		}
		return resp, nil
	}, remote)
}

// PrefixEnd returns the smallest key greater than every key with the
// prefix, or nil when there is none (a prefix of all 0xff bytes).
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
