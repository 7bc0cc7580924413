package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inputError is a request the API refuses before it reaches the backend.
type inputError struct {
	reason rpctypes.Reason
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &inputError{reason: rpctypes.ReasonInvalid, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &inputError{reason: rpctypes.ReasonTooLarge, msg: fmt.Sprintf(format, args...)}
}

// errorRule maps one backend sentinel to a gRPC code and reason.
type errorRule struct {
	err    error
	code   codes.Code
	reason rpctypes.Reason
}

// errorTable is the single place where backend errors become codes. Order
// matters only where one error wraps another: ErrIndeterminate before
// context errors, since a timed-out write wraps both.
var errorTable = []errorRule{
	// Auth decisions first: a denial wraps the reason (an unknown user),
	// and the decision is what the client must see.
	{auth.ErrPermissionDenied, codes.PermissionDenied, rpctypes.ReasonPermissionDenied},
	{auth.ErrUnauthenticated, codes.Unauthenticated, rpctypes.ReasonUnauthenticated},
	{auth.ErrAuthStale, codes.Unavailable, rpctypes.ReasonAuthStale},
	{auth.ErrAuthDisabled, codes.InvalidArgument, rpctypes.ReasonInvalid},
	// Refused auth changes: the state is as it was.
	{auth.ErrUserExists, codes.AlreadyExists, rpctypes.ReasonInvalid},
	{auth.ErrRoleExists, codes.AlreadyExists, rpctypes.ReasonInvalid},
	{auth.ErrRoleAlreadyGranted, codes.AlreadyExists, rpctypes.ReasonInvalid},
	{auth.ErrUserNotFound, codes.NotFound, rpctypes.ReasonInvalid},
	{auth.ErrRoleNotFound, codes.NotFound, rpctypes.ReasonInvalid},
	{auth.ErrRoleNotGranted, codes.NotFound, rpctypes.ReasonInvalid},
	{auth.ErrPermissionNotFound, codes.NotFound, rpctypes.ReasonInvalid},
	{auth.ErrInvalidName, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{auth.ErrInvalidPermission, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{auth.ErrInvalidPassword, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{auth.ErrRootRequired, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{auth.ErrRootProtected, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{replication.ErrAuthContention, codes.Aborted, rpctypes.ReasonCompareFailed},
	{shard.ErrIndeterminate, codes.Unavailable, rpctypes.ReasonIndeterminate},
	// A refusal to serve a weaker read may wrap the leader lookup that
	// failed; the refusal is what the client must see.
	{replication.ErrSessionNotMet, codes.FailedPrecondition, rpctypes.ReasonStaleReplica},
	{replication.ErrStaleReplica, codes.FailedPrecondition, rpctypes.ReasonStaleReplica},
	{shard.ErrNotLeader, codes.Unavailable, rpctypes.ReasonNotLeader},
	{replication.ErrNoLeader, codes.Unavailable, rpctypes.ReasonNoLeader},
	{shard.ErrShutdown, codes.Unavailable, rpctypes.ReasonShuttingDown},
	{shard.ErrCompareFailed, codes.Aborted, rpctypes.ReasonCompareFailed},
	{replication.ErrKeyNotFound, codes.NotFound, rpctypes.ReasonKeyNotFound},
	{replication.ErrKeyOutOfRange, codes.FailedPrecondition, rpctypes.ReasonWrongRange},
	{raftstore.ErrWrongRange, codes.FailedPrecondition, rpctypes.ReasonWrongRange},
	{replication.ErrBadSplitKey, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{raftstore.ErrBadSplit, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{replication.ErrUnknownNode, codes.NotFound, rpctypes.ReasonUnknownNode},
	{replication.ErrMemberConflict, codes.FailedPrecondition, rpctypes.ReasonMemberConflict},
	{replication.ErrBadSessionToken, codes.InvalidArgument, rpctypes.ReasonInvalid},
	{replication.ErrUnknownRange, codes.NotFound, rpctypes.ReasonUnknownRange},
	{replication.ErrStillAReplica, codes.FailedPrecondition, rpctypes.ReasonInvalid},
	{replication.ErrCompacted, codes.OutOfRange, rpctypes.ReasonCompacted},
	{replication.ErrLeaseNotFound, codes.NotFound, rpctypes.ReasonLeaseNotFound},
	{replication.ErrFeatureUnavailable, codes.FailedPrecondition, rpctypes.ReasonFeatureUnavailable},
	{replication.ErrTxnConflict, codes.Aborted, rpctypes.ReasonTxnConflict},
	{raftstore.ErrTxnFenced, codes.Aborted, rpctypes.ReasonTxnConflict},
	{replication.ErrCrossRange, codes.FailedPrecondition, rpctypes.ReasonCrossRange},
	{replication.ErrTxnIDUsed, codes.AlreadyExists, rpctypes.ReasonInvalid},
}

// opKind tells toStatus whether a timeout can have left a write behind.
type opKind int

const (
	opRead opKind = iota
	opWrite
)

// toStatus converts a backend error into the gRPC status the client sees.
// Statuses from a forwarded call pass through untouched.
func toStatus(err error, kind opKind) error { return classify(err, kind, false) }

// classify is toStatus for a request whose deadline has passed (expired)
// or not. A context deadline inside the backend whose request still had
// time was one of the backend's own bounds (a read-index round that found
// no quorum): the range was unavailable. Once the request's own deadline
// has passed, the deadline is what the client hears.
func classify(err error, kind opKind, expired bool) error {
	if err == nil {
		return nil
	}
	var in *inputError
	if errors.As(err, &in) {
		return rpctypes.Error(codes.InvalidArgument, in.reason, "dialkv: "+in.msg, nil)
	}
	var nf *replication.NotFoundError
	if errors.As(err, &nf) {
		meta := map[string]string{"served_by": nf.Header.GetServedBy(), "applied_index": fmt.Sprint(nf.Header.GetAppliedIndex()),
			rpctypes.MetaRangeID: fmt.Sprint(nf.Header.GetRangeId()), "session_token": nf.Header.GetSessionToken()}
		return rpctypes.Error(codes.NotFound, rpctypes.ReasonKeyNotFound, "dialkv: key not found", meta)
	}
	if errors.Is(err, shard.ErrIndeterminate) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate, "dialkv: deadline passed before the write committed; it may or may not have been applied", nil)
	}
	for _, r := range errorTable {
		if errors.Is(err, r.err) {
			return rpctypes.Error(r.code, r.reason, "dialkv: "+err.Error(), nil)
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) && kind == opRead && expired:
		// A read that could not be served in time never returns an old
		// value instead. It reports the deadline as such: NO_LEADER would
		// blame the range, and clients retry that. (A read that waited the
		// whole deadline for a leader that never came is ErrNoLeader,
		// matched in the table above.)
		return rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonDeadline, "dialkv: deadline passed before the read was served: "+err.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded) && kind == opRead:
		return rpctypes.Error(codes.Unavailable, rpctypes.ReasonNoLeader, "dialkv: no replica could serve the read at this consistency in time: "+err.Error(), nil)
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate, "dialkv: deadline exceeded; the write may or may not have been applied", nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "dialkv: request canceled")
	}
	return rpctypes.Error(codes.Internal, rpctypes.ReasonInternal, "dialkv: internal error: "+err.Error(), nil)
}

// httpStatus maps a status error to an HTTP status code.
func httpStatus(err error) int {
	reason := rpctypes.ReasonOf(err)
	switch reason {
	case rpctypes.ReasonTooLarge:
		return http.StatusRequestEntityTooLarge
	case rpctypes.ReasonStaleReplica, rpctypes.ReasonWrongRange:
		return http.StatusServiceUnavailable
	case rpctypes.ReasonMemberConflict:
		return http.StatusConflict
	case rpctypes.ReasonUnknownPath:
		return http.StatusNotFound
	case rpctypes.ReasonMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case rpctypes.ReasonPermissionDenied:
		return http.StatusForbidden
	case rpctypes.ReasonUnauthenticated:
		return http.StatusUnauthorized
	case rpctypes.ReasonCompacted:
		// Gone: the events after the cursor are no longer kept.
		return http.StatusGone
	case rpctypes.ReasonFeatureUnavailable:
		return http.StatusPreconditionFailed
	case rpctypes.ReasonTxnConflict:
		return http.StatusConflict
	case rpctypes.ReasonCrossRange:
		return http.StatusBadRequest
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.Aborted:
		return http.StatusPreconditionFailed
	case codes.Unavailable, codes.FailedPrecondition:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499
	}
	return http.StatusInternalServerError
}
