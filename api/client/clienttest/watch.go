package clienttest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// The fake's watch and leases. Every write is an event at the store's
// revision, tagged with its key's range; a cursor names, for each range,
// the revision up to which that range's events were delivered. A lease
// ends only when a test says (Revoke, or Store.ExpireLease): a fake has no
// clock.

type fakeLease struct {
	granted int64
	keys    map[string]bool
}

// watchBreak is a scripted break: the stream sends after messages, then
// fails with err.
type watchBreak struct {
	after int
	err   error
}

// BreakWatch makes the next Watch stream (after those already scripted)
// send after messages and then fail with err, as a stream cut by a dying
// node does.
func (s *Server) BreakWatch(after int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breaks = append(s.breaks, watchBreak{after: after, err: err})
}

func (s *Server) nextBreak() (watchBreak, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.breaks) == 0 {
		return watchBreak{}, false
	}
	b := s.breaks[0]
	s.breaks = s.breaks[1:]
	return b, true
}

// Compact drops the events at and below rev: a watch from an older
// cursor fails with COMPACTED.
func (st *Store) Compact(rev uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.compacted = max(st.compacted, rev)
}

// Rev returns the store's revision, the index of its last write.
func (st *Store) Rev() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rev
}

// ExpireLease ends lease id as its TTL running out would: its keys are
// deleted with the cause LEASE_EXPIRED. It reports whether the lease was
// alive.
func (st *Store) ExpireLease(id int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.endLeaseLocked(id, kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED) >= 0
}

// recordLocked appends ev at the current revision and wakes watchers.
func (st *Store) recordLocked(ev *kvpb.Event) {
	ev.RangeId, ev.Index = st.rangeIDLocked(ev.Key), st.rev
	st.events = append(st.events, ev)
	close(st.changed)
	st.changed = make(chan struct{})
}

// deleteLocked deletes key at the current revision.
func (st *Store) deleteLocked(key []byte, cause kvpb.DeleteCause, lease int64) {
	prev := st.kvs[string(key)]
	delete(st.kvs, string(key))
	st.detachLocked(key)
	st.recordLocked(&kvpb.Event{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: bytes.Clone(key), PrevValue: prev.GetValue(),
		PrevExists: prev != nil, Cause: cause, Lease: lease})
}

// detachLocked takes key off any lease: a put without the lease, or a
// delete, ends the attachment.
func (st *Store) detachLocked(key []byte) {
	for _, l := range st.leases {
		delete(l.keys, string(key))
	}
}

// endLeaseLocked deletes lease id and its keys, all at one revision as
// one Raft entry would; it returns how many, or -1 for no such lease.
func (st *Store) endLeaseLocked(id int64, cause kvpb.DeleteCause) int64 {
	l := st.leases[id]
	if l == nil {
		return -1
	}
	delete(st.leases, id)
	keys := make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		st.rev++
	}
	for _, k := range keys {
		st.deleteLocked([]byte(k), cause, id)
	}
	return int64(len(keys))
}

func leaseNotFound(id int64) error {
	return rpctypes.Error(codes.NotFound, rpctypes.ReasonLeaseNotFound, fmt.Sprintf("lease %d not found", id), nil)
}

// rangeIDsLocked are the ranges a cursor "from now" names.
func (st *Store) rangeIDsLocked() []uint64 {
	if len(st.ranges) == 0 {
		return []uint64{1}
	}
	ids := make([]uint64, len(st.ranges))
	for i, d := range st.ranges {
		ids[i] = d.GetId()
	}
	return ids
}

func watched(req *kvpb.WatchRequest, key []byte) bool {
	switch {
	case len(req.GetKey()) > 0:
		return bytes.Equal(key, req.GetKey())
	case len(req.GetPrefix()) > 0:
		return bytes.HasPrefix(key, req.GetPrefix())
	}
	return bytes.Compare(key, req.GetStart()) >= 0 && (len(req.GetEnd()) == 0 || bytes.Compare(key, req.GetEnd()) < 0)
}

// Watch streams the store's events as a node would: first a progress
// message with the cursor it starts from, then each batch of new events
// with the cursor after them. Scripted failures (Fail) refuse the stream;
// scripted breaks (BreakWatch) cut it.
func (s *Server) Watch(req *kvpb.WatchRequest, stream kvpb.KV_WatchServer) error {
	if err := s.enter(MethodWatch); err != nil {
		return err
	}
	cur, err := rpctypes.ParseWatchCursor(req.GetFrom())
	if err != nil {
		return invalid(err.Error())
	}
	brk, breaks := s.nextBreak()
	sent := 0
	send := func(m *kvpb.WatchResponse) error {
		if breaks && sent == brk.after {
			return brk.err
		}
		sent++
		return stream.Send(m)
	}
	st := s.Store
	st.mu.Lock()
	if len(cur) == 0 {
		for _, id := range st.rangeIDsLocked() {
			cur[id] = st.rev
		}
	}
	for id, idx := range cur {
		if idx < st.compacted {
			st.mu.Unlock()
			return rpctypes.Error(codes.OutOfRange, rpctypes.ReasonCompacted, fmt.Sprintf("range %d: cursor %d is older than the retained events (from %d)", id, idx, st.compacted), nil)
		}
	}
	st.mu.Unlock()
	if err := send(&kvpb.WatchResponse{Cursor: cur.String()}); err != nil {
		return err
	}
	// One iteration per change to the store; the client's context ends
	// the stream.
	for {
		st.mu.Lock()
		var evs []*kvpb.Event
		for _, ev := range st.events {
			if ev.GetIndex() > cur[ev.GetRangeId()] && watched(req, ev.GetKey()) {
				ev = cloneAll([]*kvpb.Event{ev})[0]
				if !req.GetPrevValue() {
					ev.PrevValue, ev.PrevExists = nil, false
				}
				evs = append(evs, ev)
			}
		}
		for _, id := range st.rangeIDsLocked() {
			cur[id] = max(cur[id], st.rev)
		}
		for _, ev := range evs {
			cur[ev.GetRangeId()] = max(cur[ev.GetRangeId()], ev.GetIndex())
		}
		changed := st.changed
		st.mu.Unlock()
		if len(evs) > 0 {
			if err := send(&kvpb.WatchResponse{Events: evs, Cursor: cur.String()}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (s *Server) Grant(_ context.Context, req *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	if err := s.enter(MethodLeaseGrant); err != nil {
		return nil, err
	}
	if req.GetTtl() < 1 {
		return nil, invalid("ttl must be at least 1 s")
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	st.nextLease++
	st.leases[st.nextLease] = &fakeLease{granted: req.GetTtl(), keys: map[string]bool{}}
	return &kvpb.LeaseGrantResponse{Id: st.nextLease, Ttl: req.GetTtl()}, nil
}

// KeepAlive answers each renewal with the lease's granted TTL, and ends
// the stream with LEASE_NOT_FOUND once the lease has ended.
func (s *Server) KeepAlive(stream kvpb.Lease_KeepAliveServer) error {
	// One iteration per renewal the client sends.
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.enter(MethodLeaseKeepAlive); err != nil {
			return err
		}
		s.Store.mu.Lock()
		l := s.Store.leases[req.GetId()]
		s.Store.mu.Unlock()
		if l == nil {
			return leaseNotFound(req.GetId())
		}
		if err := stream.Send(&kvpb.LeaseKeepAliveResponse{Id: req.GetId(), Ttl: l.granted}); err != nil {
			return err
		}
	}
}

func (s *Server) Revoke(_ context.Context, req *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	if err := s.enter(MethodLeaseRevoke); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	n := s.Store.endLeaseLocked(req.GetId(), kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED)
	if n < 0 {
		return nil, leaseNotFound(req.GetId())
	}
	return &kvpb.LeaseRevokeResponse{KeysDeleted: n}, nil
}

func (s *Server) List(context.Context, *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	if err := s.enter(MethodLeaseList); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	resp := &kvpb.LeaseListResponse{}
	for id, l := range s.Store.leases {
		resp.Leases = append(resp.Leases, &kvpb.LeaseStatus{Id: id, GrantedTtl: l.granted, Ttl: l.granted})
	}
	slices.SortFunc(resp.Leases, func(a, b *kvpb.LeaseStatus) int { return cmp.Compare(a.GetId(), b.GetId()) })
	return resp, nil
}

func (s *Server) TimeToLive(_ context.Context, req *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	if err := s.enter(MethodLeaseTimeToLive); err != nil {
		return nil, err
	}
	s.Store.mu.Lock()
	defer s.Store.mu.Unlock()
	l := s.Store.leases[req.GetId()]
	if l == nil {
		return nil, leaseNotFound(req.GetId())
	}
	resp := &kvpb.LeaseTimeToLiveResponse{Id: req.GetId(), GrantedTtl: l.granted, Ttl: l.granted}
	if req.GetKeys() {
		keys := make([]string, 0, len(l.keys))
		for k := range l.keys {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			resp.Keys = append(resp.Keys, []byte(k))
		}
	}
	return resp, nil
}
