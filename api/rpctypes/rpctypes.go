// Package rpctypes is the error vocabulary shared by dialkv's servers and
// clients: every error a server returns is a gRPC status whose ErrorInfo
// detail carries one of the Reason values below, so a client can tell "try
// another replica" from "the write may have happened" without parsing text.
// The HTTP API sends the same reason in the X-Dialkv-Reason header and in
// its JSON error body.
//
// The rest of what both sides must read alike lives here too: the names
// of the consistency levels, the session token's format (SessionToken),
// the watch cursor's (WatchCursor), the JSON shapes of the HTTP API's
// answers that kvctl prints as well (Bytes, KVJSON, TxnResultJSON), and
// the one rule for whether a failed call ever left (NeverSent, and
// NeverSentHTTP for the HTTP API).
package rpctypes

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of every dialkv error.
const Domain = "dialkv"

// Reason names why a request failed. A request that failed with a reason in
// the first group was definitely not applied and may be retried anywhere.
type Reason string

const (
	// Definitely not applied; safe to retry elsewhere.
	ReasonNotLeader    Reason = "NOT_LEADER"    // asked replica is not the leader and could not forward
	ReasonNoLeader     Reason = "NO_LEADER"     // the range has no leader (election, lost quorum)
	ReasonShuttingDown Reason = "SHUTTING_DOWN" // the node is stopping
	ReasonStaleReplica Reason = "STALE_REPLICA" // replica cannot prove the freshness a read asked for
	ReasonWrongRange   Reason = "WRONG_RANGE"   // key is outside the ranges this node serves
	ReasonUnknownRange Reason = "UNKNOWN_RANGE" // no such range on this node
	// The node's client port holds as many connections as it may; the
	// request was never read (HTTP 503 on a refused connection).
	ReasonTooManyConnections Reason = "TOO_MANY_CONNECTIONS"

	// The write may or may not have been applied (a timeout, or leadership
	// lost after the entry was appended). Never retry blindly.
	ReasonIndeterminate Reason = "INDETERMINATE"

	// Answers about the data or the request.
	ReasonKeyNotFound    Reason = "KEY_NOT_FOUND"
	ReasonCompareFailed  Reason = "COMPARE_FAILED"
	ReasonInvalid        Reason = "INVALID_ARGUMENT"
	ReasonTooLarge       Reason = "TOO_LARGE"
	ReasonUnknownNode    Reason = "UNKNOWN_NODE"
	ReasonInternal       Reason = "INTERNAL"
	ReasonDeadline       Reason = "DEADLINE_EXCEEDED"
	ReasonMemberConflict Reason = "MEMBER_CONFLICT"

	// Watch and leases: a watch cursor older than the events the replicas
	// retain (re-read, then watch from now); a lease that was never
	// granted, has expired or was revoked; a feature not every node of the
	// cluster supports yet (a rolling upgrade is under way).
	ReasonCompacted          Reason = "COMPACTED"
	ReasonLeaseNotFound      Reason = "LEASE_NOT_FOUND"
	ReasonFeatureUnavailable Reason = "FEATURE_UNAVAILABLE"

	// Transactions: one that kept meeting other transactions' locks (or
	// was declared aborted before it applied) and did nothing, to retry;
	// one asking what only a single range can do (a scan across ranges).
	ReasonTxnConflict Reason = "TXN_CONFLICT"
	ReasonCrossRange  Reason = "CROSS_RANGE"

	// Auth: the user may not do this (403); no acceptable credentials
	// (401); the node cannot vouch that its auth state is current within
	// the revocation bound, so it decides nothing (503, retry elsewhere).
	ReasonPermissionDenied Reason = "PERMISSION_DENIED"
	ReasonUnauthenticated  Reason = "UNAUTHENTICATED"
	ReasonAuthStale        Reason = "AUTH_STALE"

	// HTTP only: a path the API does not have (404), a method the path
	// does not take (405, with Allow); /readyz on a node whose data
	// filesystem is (nearly) full, or that is not ready for another
	// reason than a range without a leader (NO_LEADER).
	ReasonUnknownPath      Reason = "UNKNOWN_PATH"
	ReasonMethodNotAllowed Reason = "METHOD_NOT_ALLOWED"
	ReasonDiskFull         Reason = "DISK_FULL"
	ReasonNotReady         Reason = "NOT_READY"
)

// Metadata keys an ErrorInfo may carry.
const (
	MetaLeaderID   = "leader_id"   // node id of the leader, when known
	MetaLeaderAddr = "leader_addr" // its client gRPC address, when known
	MetaRangeID    = "range_id"
)

// ForwardedHeader is the gRPC metadata key a node sets when it forwards a
// request to another node, so that the receiver never forwards it again.
const ForwardedHeader = "x-dialkv-forwarded"

// MetaHopsHeader counts the hops of a meta-range request apart from the
// request that caused it (a forwarded ChangeReplicas may need to read the
// meta range afresh).
const MetaHopsHeader = "x-dialkv-meta-hops"

// PeerHeaders are the metadata keys only a peer may set: a node trusts them
// on its peer port alone and drops them from requests on its client port,
// where anyone could forge them (a forged hop count would make the node
// refuse to forward, or answer for a range it does not lead).
var PeerHeaders = []string{ForwardedHeader, MetaHopsHeader}

// Error builds a status error with the given code, reason and message.
func Error(code codes.Code, reason Reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: string(reason), Domain: Domain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// ReasonOf returns the reason carried by err, or "" when err is not a
// dialkv status error. Context errors map to ReasonDeadline.
func ReasonOf(err error) Reason {
	if info := InfoOf(err); info != nil {
		return Reason(info.Reason)
	}
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return ReasonDeadline
	}
	return ""
}

// InfoOf returns the ErrorInfo detail of a dialkv status error, or nil.
func InfoOf(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == Domain {
			return info
		}
	}
	return nil
}

// NotApplied reports whether err proves that a write was not applied, so
// that retrying it elsewhere cannot apply it twice.
func NotApplied(err error) bool {
	switch ReasonOf(err) {
	case ReasonNotLeader, ReasonNoLeader, ReasonShuttingDown, ReasonWrongRange, ReasonUnknownRange,
		ReasonInvalid, ReasonTooLarge, ReasonCompareFailed,
		ReasonPermissionDenied, ReasonUnauthenticated, ReasonAuthStale,
		ReasonLeaseNotFound, ReasonFeatureUnavailable, ReasonTxnConflict, ReasonCrossRange:
		return true
	}
	return false
}

// Retryable reports whether err is worth retrying on another endpoint: the
// replica or the cluster was unavailable, not the request wrong.
func Retryable(err error) bool {
	switch ReasonOf(err) {
	case ReasonNotLeader, ReasonNoLeader, ReasonShuttingDown, ReasonStaleReplica, ReasonWrongRange, ReasonUnknownRange, ReasonAuthStale:
		return true
	case "":
		return status.Code(err) == codes.Unavailable
	}
	return false
}
