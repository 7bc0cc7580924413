// Package clienttest runs fake dialkv nodes in-process for the tests of the
// client library and of kvctl. A fake serves the KV and Cluster services
// from a Store that several fakes may share, and can be scripted to fail
// the next N calls of a method with a given error, which is how tests play
// elections, forwarding hints and lost connections without a real cluster.
package clienttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
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
)

// Store is the state fakes share: keys, a revision counter and members.
type Store struct {
	mu      sync.Mutex
	kvs     map[string]*kvpb.KeyValue
	rev     uint64
	members []*kvpb.Member
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{kvs: make(map[string]*kvpb.KeyValue)}
}

// Put writes directly, bypassing any script, for test setup.
func (st *Store) Put(key, value []byte) uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.putLocked(key, value)
}

func (st *Store) putLocked(key, value []byte) uint64 {
	st.rev++
	st.kvs[string(key)] = &kvpb.KeyValue{Key: bytes.Clone(key), Value: bytes.Clone(value), Revision: st.rev}
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

// SetMembers replaces the member list.
func (st *Store) SetMembers(members ...*kvpb.Member) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.members = members
}

// Server is one fake node.
type Server struct {
	kvpb.UnimplementedKVServer
	kvpb.UnimplementedClusterServer

	ID    string
	Addr  string // 127.0.0.1:port it listens on
	Store *Store

	pageSize int
	state    string

	mu     sync.Mutex
	script map[string][]error
	calls  map[string]int
	grpc   *grpc.Server
}

// Option configures Start.
type Option func(*Server)

// WithStore makes the server share st (default: a store of its own).
func WithStore(st *Store) Option { return func(s *Server) { s.Store = st } }

// WithID sets the node id reported in headers (default "n1").
func WithID(id string) Option { return func(s *Server) { s.ID = id } }

// WithPageSize caps each Scan page, to exercise paging (default 1000).
func WithPageSize(n int) Option { return func(s *Server) { s.pageSize = n } }

// WithState sets the Raft state Status reports (default "Leader").
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clienttest: listen: %v", err)
	}
	s.Addr = lis.Addr().String()
	s.grpc = grpc.NewServer()
	kvpb.RegisterKVServer(s.grpc, s)
	kvpb.RegisterClusterServer(s.grpc, s)
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clienttest: listen: %v", err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatalf("clienttest: close: %v", err)
	}
	return addr
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

func (s *Server) writeHeader(rev uint64) *kvpb.WriteHeader {
	return &kvpb.WriteHeader{ServedBy: s.ID, RangeId: 1, Revision: rev, SessionToken: fmt.Sprintf("s%d", rev)}
}

func (s *Server) readHeaderLocked(read *kvpb.ReadOptions) *kvpb.ReadHeader {
	c := read.GetConsistency()
	if c == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		c = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return &kvpb.ReadHeader{ServedBy: s.ID, RangeId: 1, AppliedIndex: s.Store.rev, Consistency: c,
		SessionToken: fmt.Sprintf("s%d", s.Store.rev)}
}

func (s *Server) Put(_ context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if err := s.enter(MethodPut); err != nil {
		return nil, err
	}
	if len(req.GetKey()) == 0 {
		return nil, invalid("empty key")
	}
	rev := s.Store.Put(req.GetKey(), req.GetValue())
	return &kvpb.PutResponse{Header: s.writeHeader(rev)}, nil
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
	return &kvpb.GetResponse{Header: s.readHeaderLocked(req.GetRead()), Kv: kv}, nil
}

func (s *Server) Delete(_ context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	if err := s.enter(MethodDelete); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.kvs[string(req.GetKey())]
	delete(st.kvs, string(req.GetKey()))
	st.rev++
	return &kvpb.DeleteResponse{Header: s.writeHeader(st.rev), Deleted: ok}, nil
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
	return &kvpb.CompareAndSwapResponse{Header: s.writeHeader(rev)}, nil
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
	resp := &kvpb.ScanResponse{Header: s.readHeaderLocked(req.GetRead())}
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
	s.Store.mu.Lock()
	rev := s.Store.rev
	s.Store.mu.Unlock()
	applied := rev
	if s.state != "Leader" && applied > 0 {
		applied-- // a follower trails by one, so LAG shows something
	}
	return &kvpb.StatusResponse{Node: &kvpb.NodeStatus{
		Id: s.ID, GrpcAddr: s.Addr, RaftAddr: "raft-" + s.ID, Version: "test",
		Ranges: []*kvpb.RangeStatus{{
			Id: 1, Leader: "n1", Replicas: []string{"n1"}, State: s.state, Term: 2,
			CommitIndex: rev, AppliedIndex: applied, LastLogIndex: rev,
		}},
	}}, nil
}

func (s *Server) Members(context.Context, *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	if err := s.enter(MethodMembers); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	return &kvpb.MembersResponse{Members: slices.Clone(s.Store.members)}, nil
}

func (s *Server) AddMember(_ context.Context, req *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	if err := s.enter(MethodAddMember); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range st.members {
		if m.GetId() == req.GetId() {
			return nil, rpctypes.Error(codes.AlreadyExists, rpctypes.ReasonMemberConflict, "member exists", nil)
		}
	}
	st.members = append(st.members, &kvpb.Member{Id: req.GetId(), RaftAddr: req.GetRaftAddr(), Voter: !req.GetNonvoter(), Reachable: true})
	return &kvpb.AddMemberResponse{Members: slices.Clone(st.members)}, nil
}

func (s *Server) RemoveMember(_ context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	if err := s.enter(MethodRemoveMember); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	i := slices.IndexFunc(st.members, func(m *kvpb.Member) bool { return m.GetId() == req.GetId() })
	if i < 0 {
		return nil, rpctypes.Error(codes.NotFound, rpctypes.ReasonUnknownNode, "unknown node "+req.GetId(), nil)
	}
	st.members = slices.Delete(st.members, i, i+1)
	return &kvpb.RemoveMemberResponse{Members: slices.Clone(st.members)}, nil
}
