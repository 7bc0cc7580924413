// Package clienttest runs fake dialkv nodes in-process for the tests of the
// client library and of kvctl. A fake serves the KV and Cluster services
// from a Store that several fakes may share, and can be scripted to fail
// the next N calls of a method with a given error, which is how tests play
// elections, forwarding hints and lost connections without a real cluster.
// It also serves KV.Watch and the Lease service from the Store's writes
// (watch.go), with scripted breaks of a watch stream (BreakWatch).
//
// The Store also holds the cluster's registry and routing table: the nodes
// (SetNodes, usually from Server.Node) and the ranges (SetRanges), which
// Ranges returns and SplitRange, AddMember and RemoveMember change. Members
// derives its answer from them as a real node does: Voter for an active
// node, Leader for a node leading a range. A fake serves every key whatever
// the ranges say; tests script WRONG_RANGE or NOT_LEADER with Fail.
package clienttest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
)

// Method names accepted by Server.Fail and Server.Calls.
const (
	MethodPut          = "Put"
	MethodGet          = "Get"
	MethodDelete       = "Delete"
	MethodScan         = "Scan"
	MethodCAS          = "CompareAndSwap"
	MethodStatus       = "Status"
	MethodMembers      = "Members"
	MethodAddMember    = "AddMember"
	MethodRemoveMember = "RemoveMember"
	MethodRanges       = "Ranges"
	MethodSplitRange   = "SplitRange"
	// Watch counts streams opened; LeaseKeepAlive counts renewals.
	MethodWatch           = "Watch"
	MethodLeaseGrant      = "LeaseGrant"
	MethodLeaseKeepAlive  = "LeaseKeepAlive"
	MethodLeaseRevoke     = "LeaseRevoke"
	MethodLeaseList       = "LeaseList"
	MethodLeaseTimeToLive = "LeaseTimeToLive"
)

// Node states, as in kvpb.NodeInfo.State.
const (
	StateActive          = "active"
	StateDecommissioning = "decommissioning"
	StateRemoved         = "removed"
)

// Store is the state fakes share: keys, a revision counter, the node
// registry and the ranges.
type Store struct {
	mu          sync.Mutex
	kvs         map[string]*kvpb.KeyValue
	rev         uint64
	nodes       []*kvpb.NodeInfo
	ranges      []*kvpb.RangeDescriptor // sorted by start key
	unreachable map[string]bool
	// The watch side (watch.go): every write as an event, the index at
	// and below which events are gone, a channel closed (and replaced)
	// by every write, and the leases.
	events    []*kvpb.Event
	compacted uint64
	changed   chan struct{}
	leases    map[int64]*fakeLease
	nextLease int64
	// txns holds each transaction id's outcome (txn.go).
	txns map[string]txnOutcome
}

// NewStore returns an empty store: no keys, no nodes, no ranges.
func NewStore() *Store {
	return &Store{kvs: make(map[string]*kvpb.KeyValue), unreachable: make(map[string]bool),
		changed: make(chan struct{}), leases: make(map[int64]*fakeLease), nextLease: 7587000}
}

// Put writes directly, bypassing any script, for test setup.
func (st *Store) Put(key, value []byte) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.putLocked(key, value)
}

func (st *Store) putLocked(key, value []byte) uint64 {
	st.rev++
	prev, had := st.kvs[string(key)]
	st.kvs[string(key)] = &kvpb.KeyValue{Key: bytes.Clone(key), Value: bytes.Clone(value), Revision: st.rev}
	st.detachLocked(key)
	st.recordLocked(&kvpb.Event{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: bytes.Clone(key), Value: bytes.Clone(value),
		PrevValue: prev.GetValue(), PrevExists: had})
	return st.rev
}

// Value returns the stored value of key and whether it exists.
func (st *Store) Value(key []byte) ([]byte, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	kv, ok := st.kvs[string(key)]
	if !ok {
		return nil, false
	}
	return bytes.Clone(kv.Value), true
}

// Len returns the number of keys.
func (st *Store) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.kvs)
}

// SetNodes replaces the node registry. A node without a state is active.
func (st *Store) SetNodes(nodes ...*kvpb.NodeInfo) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.nodes = nil
	for _, n := range nodes {
		n = proto.CloneOf(n)
		if n.State == "" {
			n.State = StateActive
		}
		st.nodes = append(st.nodes, n)
	}
}

// Nodes returns a copy of the node registry.
func (st *Store) Nodes() []*kvpb.NodeInfo {
	st.mu.Lock()
	defer st.mu.Unlock()
	return cloneAll(st.nodes)
}

// SetRanges replaces the ranges; they are kept in key order.
func (st *Store) SetRanges(ranges ...*kvpb.RangeDescriptor) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ranges = cloneAll(ranges)
	slices.SortFunc(st.ranges, func(a, b *kvpb.RangeDescriptor) int { return bytes.Compare(a.GetStart(), b.GetStart()) })
}

// Ranges returns a copy of the ranges in key order.
func (st *Store) Ranges() []*kvpb.RangeDescriptor {
	st.mu.Lock()
	defer st.mu.Unlock()
	return cloneAll(st.ranges)
}

// SetLeader names nodeID the leader of range id.
func (st *Store) SetLeader(id uint64, nodeID string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, d := range st.ranges {
		if d.GetId() == id {
			d.Leader = nodeID
		}
	}
}

// SetReachable sets whether Members reports node id reachable (default
// true).
func (st *Store) SetReachable(id string, reachable bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.unreachable[id] = !reachable
}

// rangeLocked returns the range holding key, or nil.
func (st *Store) rangeLocked(key []byte) *kvpb.RangeDescriptor {
	for _, d := range st.ranges {
		if bytes.Compare(key, d.GetStart()) >= 0 && (len(d.GetEnd()) == 0 || bytes.Compare(key, d.GetEnd()) < 0) {
			return d
		}
	}
	return nil
}

// rangeIDLocked is the id headers report for key: its range's, or 1 when
// no ranges are set.
func (st *Store) rangeIDLocked(key []byte) uint64 {
	if d := st.rangeLocked(key); d != nil {
		return d.GetId()
	}
	return 1
}

func (st *Store) membersLocked() []*kvpb.Member {
	leads := map[string]bool{}
	for _, d := range st.ranges {
		leads[d.GetLeader()] = true
	}
	members := make([]*kvpb.Member, 0, len(st.nodes))
	for _, n := range st.nodes {
		members = append(members, &kvpb.Member{
			Id: n.GetId(), RaftAddr: n.GetRaftAddr(), GrpcAddr: n.GetGrpcAddr(), HttpAddr: n.GetHttpAddr(),
			Voter: n.GetState() == StateActive, Leader: leads[n.GetId()], Reachable: !st.unreachable[n.GetId()],
		})
	}
	return members
}

func (st *Store) nodeLocked(id string) *kvpb.NodeInfo {
	for _, n := range st.nodes {
		if n.GetId() == id {
			return n
		}
	}
	return nil
}

// decommissionLocked moves node id's replicas to active nodes that do not
// hold the range yet (or drops them when there is none), hands its
// leaderships to the next replica, and marks it removed.
func (st *Store) decommissionLocked(n *kvpb.NodeInfo) {
	n.State = StateDecommissioning
	for _, d := range st.ranges {
		i := slices.Index(d.Replicas, n.GetId())
		if i < 0 {
			continue
		}
		d.Replicas = slices.Delete(d.Replicas, i, i+1)
		for _, other := range st.nodes {
			if other.GetState() == StateActive && !slices.Contains(d.Replicas, other.GetId()) {
				d.Replicas = append(d.Replicas, other.GetId())
				break
			}
		}
		if d.GetLeader() == n.GetId() {
			d.Leader = ""
			if len(d.Replicas) > 0 {
				d.Leader = d.Replicas[0]
			}
		}
	}
	n.State = StateRemoved
}

func cloneAll[T proto.Message](in []T) []T {
	out := make([]T, len(in))
	for i, m := range in {
		out[i] = proto.CloneOf(m)
	}
	return out
}

// Server is one fake node.
//
// Locking: mu and the shared Store's mu are never held together; a call
// takes mu (enter) and releases it before it reads or writes the Store.
type Server struct {
	kvpb.UnimplementedKVServer
	kvpb.UnimplementedClusterServer
	kvpb.UnimplementedLeaseServer

	ID    string
	Addr  string // 127.0.0.1:port it listens on
	Store *Store

	pageSize int
	state    string

	// mu guards the fields below until the blank line.
	mu     sync.Mutex
	script map[string][]error
	calls  map[string]int
	breaks []watchBreak

	grpc *grpc.Server
}

// Option configures Start.
type Option func(*Server)

// WithStore makes the server share st (default: a store of its own).
func WithStore(st *Store) Option { return func(s *Server) { s.Store = st } }

// WithID sets the node id reported in headers (default "n1").
func WithID(id string) Option { return func(s *Server) { s.ID = id } }

// WithPageSize caps each Scan page, to exercise paging (default 1000).
func WithPageSize(n int) Option { return func(s *Server) { s.pageSize = n } }

// WithState sets the Raft state Status reports (default "Leader") when the
// store has no ranges. With ranges, Status reports every range the node is
// a replica of, as Leader or Follower according to the range's leader.
func WithState(state string) Option { return func(s *Server) { s.state = state } }

// Start serves a fake node on a loopback port until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{ID: "n1", pageSize: 1000, state: "Leader", script: map[string][]error{}, calls: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	if s.Store == nil {
		s.Store = NewStore()
	}
	lis, err := harness.ListenLocal()
	if err != nil {
		t.Fatalf("clienttest: listen: %v", err)
	}
	s.Addr = lis.Addr().String()
	s.grpc = grpc.NewServer()
	kvpb.RegisterKVServer(s.grpc, s)
	kvpb.RegisterClusterServer(s.grpc, s)
	kvpb.RegisterLeaseServer(s.grpc, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.grpc.Serve(lis)
	}()
	t.Cleanup(func() {
		s.grpc.Stop()
		<-done
	})
	return s
}

// ClosedAddr returns a loopback address nothing listens on: connecting to
// it is refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ports, err := harness.FreePorts(1)
	if err != nil {
		t.Fatalf("clienttest: %v", err)
	}
	return harness.Addr(ports[0])
}

// Node returns the NodeInfo of this fake, active, for Store.SetNodes.
func (s *Server) Node() *kvpb.NodeInfo {
	return &kvpb.NodeInfo{Id: s.ID, RaftAddr: "raft-" + s.ID, GrpcAddr: s.Addr, State: StateActive}
}

// Fail makes the next n calls of method fail with err, after any failures
// already scripted.
func (s *Server) Fail(method string, n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.script[method] = append(s.script[method], err)
	}
}

// Calls returns how many times method was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// enter counts a call and returns its scripted failure, if any.
func (s *Server) enter(method string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	if q := s.script[method]; len(q) > 0 {
		s.script[method] = q[1:]
		return q[0]
	}
	return nil
}

// NotLeader builds the error a follower returns, naming the leader when
// leaderAddr is not empty.
func NotLeader(leaderAddr string) error {
	var meta map[string]string
	if leaderAddr != "" {
		meta = map[string]string{rpctypes.MetaLeaderAddr: leaderAddr}
	}
	return rpctypes.Error(codes.Unavailable, rpctypes.ReasonNotLeader, "not leader", meta)
}

// Indeterminate builds the error of a write whose fate is unknown.
func Indeterminate() error {
	return rpctypes.Error(codes.Unavailable, rpctypes.ReasonIndeterminate, "leadership lost while writing", nil)
}

func invalid(msg string) error {
	return rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, msg, nil)
}

func (s *Server) writeHeaderLocked(key []byte, rev uint64) *kvpb.WriteHeader {
	return &kvpb.WriteHeader{ServedBy: s.ID, RangeId: s.Store.rangeIDLocked(key), Revision: rev, SessionToken: fmt.Sprintf("s%d", rev)}
}

func (s *Server) readHeaderLocked(key []byte, read *kvpb.ReadOptions) *kvpb.ReadHeader {
	c := read.GetConsistency()
	if c == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		c = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	}
	h := &kvpb.ReadHeader{ServedBy: s.ID, RangeId: s.Store.rangeIDLocked(key), AppliedIndex: s.Store.rev, Consistency: c,
		SessionToken: fmt.Sprintf("s%d", s.Store.rev)}
	if read.GetExplain() {
		h.Explain = &kvpb.ReadExplain{ReplicaRole: "follower", ChosenBecause: "the node asked holds a replica"}
	}
	return h
}

func (s *Server) Put(_ context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if err := s.enter(MethodPut); err != nil {
		return nil, err
	}
	if len(req.GetKey()) == 0 {
		return nil, invalid("empty key")
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.leases[req.GetLease()]
	if req.GetLease() != 0 && l == nil {
		return nil, leaseNotFound(req.GetLease())
	}
	rev := st.putLocked(req.GetKey(), req.GetValue())
	if l != nil {
		l.keys[string(req.GetKey())] = true
		st.events[len(st.events)-1].Lease = req.GetLease()
	}
	return &kvpb.PutResponse{Header: s.writeHeaderLocked(req.GetKey(), rev)}, nil
}

func (s *Server) Get(_ context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	if err := s.enter(MethodGet); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	kv, ok := st.kvs[string(req.GetKey())]
	if !ok {
		return nil, rpctypes.Error(codes.NotFound, rpctypes.ReasonKeyNotFound, "key not found", nil)
	}
	return &kvpb.GetResponse{Header: s.readHeaderLocked(req.GetKey(), req.GetRead()), Kv: kv}, nil
}

func (s *Server) Delete(_ context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	if err := s.enter(MethodDelete); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.kvs[string(req.GetKey())]
	st.rev++
	if ok {
		st.deleteLocked(req.GetKey(), kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED, 0)
	}
	return &kvpb.DeleteResponse{Header: s.writeHeaderLocked(req.GetKey(), st.rev), Deleted: ok}, nil
}

func (s *Server) CompareAndSwap(_ context.Context, req *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error) {
	if err := s.enter(MethodCAS); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	kv, ok := st.kvs[string(req.GetKey())]
	switch {
	case req.GetExpectMissing() && ok:
		return nil, rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "key exists", nil)
	case !req.GetExpectMissing() && !ok:
		return nil, rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "key missing", nil)
	case !req.GetExpectMissing() && !bytes.Equal(kv.GetValue(), req.GetExpectedValue()):
		return nil, rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "value differs", nil)
	}
	rev := st.putLocked(req.GetKey(), req.GetNewValue())
	return &kvpb.CompareAndSwapResponse{Header: s.writeHeaderLocked(req.GetKey(), rev)}, nil
}

func (s *Server) Scan(_ context.Context, req *kvpb.ScanRequest) (*kvpb.ScanResponse, error) {
	if err := s.enter(MethodScan); err != nil {
		return nil, err
	}
	start, end := req.GetStart(), req.GetEnd()
	if p := req.GetPrefix(); len(p) > 0 {
		start, end = p, nil
	}
	limit := int(req.GetLimit())
	if limit == 0 || limit > s.pageSize {
		limit = s.pageSize
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	keys := make([]string, 0, len(st.kvs))
	for k := range st.kvs {
		if bytes.Compare([]byte(k), start) < 0 || (len(end) > 0 && bytes.Compare([]byte(k), end) >= 0) {
			continue
		}
		if p := req.GetPrefix(); len(p) > 0 && !bytes.HasPrefix([]byte(k), p) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	resp := &kvpb.ScanResponse{Header: s.readHeaderLocked(start, req.GetRead())}
	for i, k := range keys {
		if i == limit {
			resp.More = true
			resp.NextKey = []byte(k)
			break
		}
		resp.Kvs = append(resp.Kvs, st.kvs[k])
	}
	return resp, nil
}

func (s *Server) Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	if err := s.enter(MethodStatus); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	rangeStatus := func(d *kvpb.RangeDescriptor, state string) *kvpb.RangeStatus {
		applied := st.rev
		if state != "Leader" && applied > 0 {
			applied-- // a follower trails by one, so LAG shows something
		}
		return &kvpb.RangeStatus{
			Id: d.GetId(), Start: d.GetStart(), End: d.GetEnd(), Generation: d.GetGeneration(),
			Leader: d.GetLeader(), Replicas: slices.Clone(d.GetReplicas()), State: state, Term: 2,
			CommitIndex: st.rev, AppliedIndex: applied, LastLogIndex: st.rev,
		}
	}
	node := &kvpb.NodeStatus{Id: s.ID, GrpcAddr: s.Addr, RaftAddr: "raft-" + s.ID, Version: "test"}
	if len(st.ranges) == 0 {
		node.Ranges = []*kvpb.RangeStatus{rangeStatus(&kvpb.RangeDescriptor{Id: 1, Leader: "n1", Replicas: []string{"n1"}}, s.state)}
	}
	for _, d := range st.ranges {
		if !slices.Contains(d.GetReplicas(), s.ID) {
			continue
		}
		state := "Follower"
		if d.GetLeader() == s.ID {
			state = "Leader"
		}
		node.Ranges = append(node.Ranges, rangeStatus(d, state))
	}
	return &kvpb.StatusResponse{Node: node}, nil
}

func (s *Server) Members(context.Context, *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	if err := s.enter(MethodMembers); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	return &kvpb.MembersResponse{Members: s.Store.membersLocked()}, nil
}

// AddMember registers a node as active, like a real node: the same id at
// the same raft address again is accepted, a different address is a
// conflict. Nonvoter is ignored.
func (s *Server) AddMember(_ context.Context, req *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	if err := s.enter(MethodAddMember); err != nil {
		return nil, err
	}
	if req.GetId() == "" {
		return nil, invalid("empty node id")
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, n := range st.nodes {
		if (n.GetId() == req.GetId()) != (n.GetRaftAddr() == req.GetRaftAddr()) && n.GetState() != StateRemoved {
			return nil, rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonMemberConflict, "member conflict", nil)
		}
	}
	if n := st.nodeLocked(req.GetId()); n != nil {
		n.State = StateActive
	} else {
		st.nodes = append(st.nodes, &kvpb.NodeInfo{Id: req.GetId(), RaftAddr: req.GetRaftAddr(), State: StateActive})
	}
	return &kvpb.AddMemberResponse{Members: st.membersLocked()}, nil
}

// RemoveMember decommissions a node at once: its replicas move to other
// active nodes, its leaderships to another replica, and it is removed.
func (s *Server) RemoveMember(_ context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	if err := s.enter(MethodRemoveMember); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.nodeLocked(req.GetId())
	if n == nil {
		return nil, rpctypes.Error(codes.NotFound, rpctypes.ReasonUnknownNode, "unknown node "+req.GetId(), nil)
	}
	if n.GetState() == StateActive {
		st.decommissionLocked(n)
	}
	return &kvpb.RemoveMemberResponse{Members: st.membersLocked()}, nil
}

func (s *Server) Ranges(context.Context, *kvpb.RangesRequest) (*kvpb.RangesResponse, error) {
	if err := s.enter(MethodRanges); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	return &kvpb.RangesResponse{Ranges: cloneAll(s.Store.ranges), Nodes: cloneAll(s.Store.nodes)}, nil
}

// SplitRange splits the range holding key at key: the left half keeps the
// id, the right half gets the next unused one, both a new generation.
func (s *Server) SplitRange(_ context.Context, req *kvpb.SplitRangeRequest) (*kvpb.SplitRangeResponse, error) {
	if err := s.enter(MethodSplitRange); err != nil {
		return nil, err
	}
	key := req.GetKey()
	if len(key) == 0 {
		return nil, invalid("empty key")
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.rangeLocked(key)
	if d == nil {
		return nil, rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonWrongRange, "no range holds the key", nil)
	}
	if bytes.Equal(key, d.GetStart()) {
		return nil, invalid(fmt.Sprintf("%q is not strictly inside range %d", key, d.GetId()))
	}
	var maxID uint64
	for _, r := range st.ranges {
		maxID = max(maxID, r.GetId())
	}
	right := proto.CloneOf(d)
	right.Id, right.Start, right.Generation = maxID+1, bytes.Clone(key), d.GetGeneration()+1
	d.End, d.Generation = bytes.Clone(key), d.GetGeneration()+1
	st.ranges = append(st.ranges, right)
	slices.SortFunc(st.ranges, func(a, b *kvpb.RangeDescriptor) int { return bytes.Compare(a.GetStart(), b.GetStart()) })
	return &kvpb.SplitRangeResponse{Left: proto.CloneOf(d), Right: proto.CloneOf(right)}, nil
}
