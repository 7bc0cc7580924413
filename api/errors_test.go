package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestErrorTable sends each backend error through a Service read (Get)
// and write (Put) and checks the gRPC code and reason the caller sees.
func TestErrorTable(t *testing.T) {
	type want struct {
		code   codes.Code
		reason rpctypes.Reason
	}
	same := func(c codes.Code, r rpctypes.Reason) [2]want { return [2]want{{c, r}, {c, r}} }
	deadline := fmt.Errorf("%w: %w", shard.ErrIndeterminate, context.DeadlineExceeded)
	tests := []struct {
		name string
		err  error
		want [2]want // [read, write]
	}{
		{"not leader", shard.ErrNotLeader, same(codes.Unavailable, rpctypes.ReasonNotLeader)},
		{"wrapped not leader", fmt.Errorf("range 3: %w", shard.ErrNotLeader), same(codes.Unavailable, rpctypes.ReasonNotLeader)},
		{"no leader", replication.ErrNoLeader, same(codes.Unavailable, rpctypes.ReasonNoLeader)},
		{"no leader wrapping a deadline", fmt.Errorf("%w for range 3: %w", replication.ErrNoLeader, context.DeadlineExceeded),
			same(codes.Unavailable, rpctypes.ReasonNoLeader)},
		{"shutdown", shard.ErrShutdown, same(codes.Unavailable, rpctypes.ReasonShuttingDown)},
		{"compare failed", shard.ErrCompareFailed, same(codes.Aborted, rpctypes.ReasonCompareFailed)},
		{"key not found", replication.ErrKeyNotFound, same(codes.NotFound, rpctypes.ReasonKeyNotFound)},
		{"not found error", &replication.NotFoundError{Header: &kvpb.ReadHeader{ServedBy: "n2"}}, same(codes.NotFound, rpctypes.ReasonKeyNotFound)},
		{"not found error without header", &replication.NotFoundError{}, same(codes.NotFound, rpctypes.ReasonKeyNotFound)},
		{"key out of range", replication.ErrKeyOutOfRange, same(codes.FailedPrecondition, rpctypes.ReasonWrongRange)},
		{"raftstore wrong range", raftstore.ErrWrongRange, same(codes.FailedPrecondition, rpctypes.ReasonWrongRange)},
		{"wrapped raftstore wrong range", fmt.Errorf("apply: %w", raftstore.ErrWrongRange), same(codes.FailedPrecondition, rpctypes.ReasonWrongRange)},
		{"bad split key", replication.ErrBadSplitKey, same(codes.InvalidArgument, rpctypes.ReasonInvalid)},
		{"raftstore bad split", raftstore.ErrBadSplit, same(codes.InvalidArgument, rpctypes.ReasonInvalid)},
		{"unknown node", replication.ErrUnknownNode, same(codes.NotFound, rpctypes.ReasonUnknownNode)},
		{"member conflict", replication.ErrMemberConflict, same(codes.FailedPrecondition, rpctypes.ReasonMemberConflict)},
		{"session not met", replication.ErrSessionNotMet, same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},
		{"stale replica", replication.ErrStaleReplica, same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},
		{"bad session token", replication.ErrBadSessionToken, same(codes.InvalidArgument, rpctypes.ReasonInvalid)},
		{"indeterminate", shard.ErrIndeterminate, same(codes.Unavailable, rpctypes.ReasonIndeterminate)},
		{"indeterminate after a deadline", deadline, same(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate)},
		{"indeterminate after a cancel", fmt.Errorf("%w: %w", shard.ErrIndeterminate, context.Canceled), same(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate)},
		{"wrapped indeterminate after a deadline", fmt.Errorf("forward: %w", deadline), same(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate)},

		// The refusal of a weaker read wins over the leader lookup it wraps.
		{"stale replica wrapping not leader", fmt.Errorf("%w: asking the leader: %w", replication.ErrStaleReplica, shard.ErrNotLeader),
			same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},
		{"stale replica wrapping no leader", fmt.Errorf("%w: asking the leader: %w", replication.ErrStaleReplica, replication.ErrNoLeader),
			same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},
		{"session not met wrapping not leader", fmt.Errorf("%w: %w", replication.ErrSessionNotMet, shard.ErrNotLeader),
			same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},
		{"not leader wrapping stale replica", fmt.Errorf("%w: %w", shard.ErrNotLeader, replication.ErrStaleReplica),
			same(codes.FailedPrecondition, rpctypes.ReasonStaleReplica)},

		// Plain context errors: a read is reported unavailable (never an
		// old value), a write as of unknown outcome.
		{"deadline", context.DeadlineExceeded, [2]want{{codes.Unavailable, rpctypes.ReasonNoLeader}, {codes.DeadlineExceeded, rpctypes.ReasonIndeterminate}}},
		{"wrapped deadline", fmt.Errorf("waiting for apply: %w", context.DeadlineExceeded),
			[2]want{{codes.Unavailable, rpctypes.ReasonNoLeader}, {codes.DeadlineExceeded, rpctypes.ReasonIndeterminate}}},
		{"canceled", context.Canceled, same(codes.Canceled, "")},

		{"unknown error", errors.New("disk on fire"), same(codes.Internal, rpctypes.ReasonInternal)},
	}
	for _, tc := range tests {
		for i, kind := range []string{"read", "write"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				svc, fb, _ := newTestService(t, testLimits())
				fb.setHook(errHook(tc.err))
				var err error
				if kind == "read" {
					_, err = svc.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k")})
				} else {
					_, err = svc.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
				}
				wantStatus(t, err, tc.want[i].code, tc.want[i].reason)
				if tc.want[i].code == codes.Internal {
					if st, _ := status.FromError(err); st.Message() != "dialkv: internal error: disk on fire" {
						t.Errorf("message %q does not carry the cause", st.Message())
					}
				}
			})
		}
	}
}

// TestErrorTableNotFoundMetadata: a NotFoundError still says who answered.
func TestErrorTableNotFoundMetadata(t *testing.T) {
	h := &kvpb.ReadHeader{ServedBy: "n3", RangeId: 9, AppliedIndex: 77, SessionToken: "9:77"}
	err := toStatus(fmt.Errorf("get: %w", &replication.NotFoundError{Header: h}), opRead)
	wantStatus(t, err, codes.NotFound, rpctypes.ReasonKeyNotFound)
	info := rpctypes.InfoOf(err)
	if info == nil {
		t.Fatal("no ErrorInfo")
	}
	for k, v := range map[string]string{"served_by": "n3", "applied_index": "77", rpctypes.MetaRangeID: "9", "session_token": "9:77"} {
		if got := info.Metadata[k]; got != v {
			t.Errorf("metadata[%s] = %q; want %q", k, got, v)
		}
	}
	if info.Domain != rpctypes.Domain {
		t.Errorf("domain %q; want %q", info.Domain, rpctypes.Domain)
	}
}

// TestErrorTablePassesStatusThrough: an error that is already a status
// (the leader's answer to a forwarded call) reaches the client unchanged,
// for reads and writes, even when its code is a deadline.
func TestErrorTablePassesStatusThrough(t *testing.T) {
	leaderMeta := map[string]string{rpctypes.MetaLeaderID: "n3", rpctypes.MetaLeaderAddr: "127.0.0.1:7030"}
	tests := []struct {
		name string
		err  error
	}{
		{"dialkv not leader with leader hint", rpctypes.Error(codes.Unavailable, rpctypes.ReasonNotLeader, "dialkv: not the leader", leaderMeta)},
		{"dialkv compare failed", rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "dialkv: compare failed", nil)},
		{"dialkv indeterminate deadline", rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate, "dialkv: remote deadline", nil)},
		{"dialkv not found", rpctypes.Error(codes.NotFound, rpctypes.ReasonKeyNotFound, "dialkv: key not found", map[string]string{"served_by": "n3"})},
		{"plain status", status.Error(codes.ResourceExhausted, "too many requests")},
		{"plain unavailable", status.Error(codes.Unavailable, "connection reset")},
	}
	for _, tc := range tests {
		for _, kind := range []opKind{opRead, opWrite} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, kind), func(t *testing.T) {
				got := toStatus(tc.err, kind)
				want, _ := status.FromError(tc.err)
				gst, ok := status.FromError(got)
				if !ok {
					t.Fatalf("%v is no longer a status", got)
				}
				if !proto.Equal(gst.Proto(), want.Proto()) {
					t.Errorf("status changed:\n got %v\nwant %v", gst.Proto(), want.Proto())
				}
			})
		}
	}
	// And through a Service method, end to end.
	svc, fb, _ := newTestService(t, testLimits())
	fwd := tests[0].err
	fb.setHook(errHook(fwd))
	_, err := svc.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k")})
	if info := rpctypes.InfoOf(err); info == nil || info.Metadata[rpctypes.MetaLeaderID] != "n3" {
		t.Errorf("forwarded status lost its leader hint: %v", err)
	}
	if !proto.Equal(status.Convert(err).Proto(), status.Convert(fwd).Proto()) {
		t.Errorf("forwarded status changed: %v", err)
	}
}

// TestServiceDeadlineOutcome: the backend runs out of the request's time.
// A read is reported DEADLINE_EXCEEDED (not NO_LEADER, which clients
// retry) and never returns the (old) value the backend still had; a write
// is DEADLINE_EXCEEDED with INDETERMINATE.
func TestServiceDeadlineOutcome(t *testing.T) {
	old := &kvpb.GetResponse{Header: &kvpb.ReadHeader{ServedBy: "n2"}, Kv: &kvpb.KeyValue{Key: []byte("k"), Value: []byte("old")}}
	tests := []struct {
		name   string
		hook   fakeHook
		write  bool
		code   codes.Code
		reason rpctypes.Reason
	}{
		{"read, backend returns ctx error", blockHook(nil, nil), false, codes.DeadlineExceeded, rpctypes.ReasonDeadline},
		{"read, backend returns an old value and ctx error", blockHook(old, nil), false, codes.DeadlineExceeded, rpctypes.ReasonDeadline},
		{"read, backend waited for a leader until the deadline", blockHook(nil, func(err error) error { return fmt.Errorf("%w for range 3: %w", replication.ErrNoLeader, err) }),
			false, codes.Unavailable, rpctypes.ReasonNoLeader},
		{"write, backend returns ctx error", blockHook(nil, nil), true, codes.DeadlineExceeded, rpctypes.ReasonIndeterminate},
		{"write, backend wraps indeterminate", blockHook(nil, func(err error) error { return fmt.Errorf("%w: %w", shard.ErrIndeterminate, err) }),
			true, codes.DeadlineExceeded, rpctypes.ReasonIndeterminate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, fb, _ := newTestService(t, testLimits())
			fb.setHook(tc.hook)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			var err error
			if tc.write {
				_, err = svc.Put(ctx, &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
			} else {
				_, err = svc.Get(ctx, &kvpb.GetRequest{Key: []byte("k")})
			}
			wantStatus(t, err, tc.code, tc.reason)
		})
	}
}

// TestClassify_DeadlineOfTheRequestIsReportedAsADeadline: once the
// request's own deadline has passed, a context deadline from the backend is
// DEADLINE_EXCEEDED for a read and INDETERMINATE for a write; before it,
// the same error came from one of the backend's own bounds and means the
// range was unavailable. A leader that never came within the deadline, and
// the refusals of weaker reads, keep their reasons either way.
func TestClassify_DeadlineOfTheRequestIsReportedAsADeadline(t *testing.T) {
	dl := context.DeadlineExceeded
	tests := []struct {
		name    string
		err     error
		kind    opKind
		expired bool
		code    codes.Code
		reason  rpctypes.Reason
	}{
		{"read, deadline passed", dl, opRead, true, codes.DeadlineExceeded, rpctypes.ReasonDeadline},
		{"read, forwarding cut off by the deadline", fmt.Errorf("forwarding to the leader of range 2: %w", dl), opRead, true, codes.DeadlineExceeded, rpctypes.ReasonDeadline},
		{"read, the backend's own bound", dl, opRead, false, codes.Unavailable, rpctypes.ReasonNoLeader},
		{"read, no leader for the whole wait", fmt.Errorf("%w for range 2: %w", replication.ErrNoLeader, dl), opRead, true, codes.Unavailable, rpctypes.ReasonNoLeader},
		{"read, stale replica", fmt.Errorf("%w: refresh: %w", replication.ErrStaleReplica, dl), opRead, true, codes.FailedPrecondition, rpctypes.ReasonStaleReplica},
		{"write, deadline passed", dl, opWrite, true, codes.DeadlineExceeded, rpctypes.ReasonIndeterminate},
		{"write, forwarding cut off by the deadline", fmt.Errorf("%w: forwarding to the leader of range 2: %w", shard.ErrIndeterminate, dl), opWrite, true, codes.DeadlineExceeded, rpctypes.ReasonIndeterminate},
		{"write, no leader for the whole wait (never sent)", fmt.Errorf("%w for range 2: %w", replication.ErrNoLeader, dl), opWrite, true, codes.Unavailable, rpctypes.ReasonNoLeader},
		{"read, canceled", context.Canceled, opRead, false, codes.Canceled, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, classify(tc.err, tc.kind, tc.expired), tc.code, tc.reason)
		})
	}
	if got := httpStatus(classify(dl, opRead, true)); got != http.StatusGatewayTimeout {
		t.Errorf("HTTP status of an expired read: %d; want 504", got)
	}
}

// TestToStatusInputErrors: the errors built by invalid and tooLarge.
func TestToStatusInputErrors(t *testing.T) {
	wantStatus(t, toStatus(invalid("bad %s", "thing"), opWrite), codes.InvalidArgument, rpctypes.ReasonInvalid)
	wantStatus(t, toStatus(tooLarge("big"), opRead), codes.InvalidArgument, rpctypes.ReasonTooLarge)
	wantStatus(t, toStatus(fmt.Errorf("wrapped: %w", tooLarge("big")), opRead), codes.InvalidArgument, rpctypes.ReasonTooLarge)
	if st, _ := status.FromError(toStatus(invalid("bad %s", "thing"), opRead)); st.Message() != "dialkv: bad thing" {
		t.Errorf("message %q; want %q", st.Message(), "dialkv: bad thing")
	}
	if err := toStatus(nil, opWrite); err != nil {
		t.Errorf("toStatus(nil) = %v", err)
	}
}

// TestHTTPStatusMapping: every reason and code → its HTTP status.
func TestHTTPStatusMapping(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, "x", nil), http.StatusBadRequest},
		{rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonTooLarge, "x", nil), http.StatusRequestEntityTooLarge},
		{rpctypes.Error(codes.NotFound, rpctypes.ReasonKeyNotFound, "x", nil), http.StatusNotFound},
		{rpctypes.Error(codes.NotFound, rpctypes.ReasonUnknownNode, "x", nil), http.StatusNotFound},
		{rpctypes.Error(codes.Aborted, rpctypes.ReasonCompareFailed, "x", nil), http.StatusPreconditionFailed},
		{rpctypes.Error(codes.Unavailable, rpctypes.ReasonNoLeader, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.Unavailable, rpctypes.ReasonNotLeader, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.Unavailable, rpctypes.ReasonShuttingDown, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.Unavailable, rpctypes.ReasonIndeterminate, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonStaleReplica, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonWrongRange, "x", nil), http.StatusServiceUnavailable},
		{rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonMemberConflict, "x", nil), http.StatusConflict},
		{rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate, "x", nil), http.StatusGatewayTimeout},
		{rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonDeadline, "x", nil), http.StatusGatewayTimeout},
		{rpctypes.Error(codes.Unimplemented, rpctypes.ReasonUnknownPath, "x", nil), http.StatusNotFound},
		{rpctypes.Error(codes.Unimplemented, rpctypes.ReasonMethodNotAllowed, "x", nil), http.StatusMethodNotAllowed},
		{rpctypes.Error(codes.Unavailable, rpctypes.ReasonDiskFull, "x", nil), http.StatusServiceUnavailable},
		{status.Error(codes.Canceled, "x"), 499},
		{rpctypes.Error(codes.Internal, rpctypes.ReasonInternal, "x", nil), http.StatusInternalServerError},
		{status.Error(codes.Unavailable, "transport"), http.StatusServiceUnavailable},
		{status.Error(codes.ResourceExhausted, "x"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		if got := httpStatus(tc.err); got != tc.want {
			t.Errorf("httpStatus(%v) = %d; want %d", tc.err, got, tc.want)
		}
	}
}
