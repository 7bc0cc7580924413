package client

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/rpctypes"
)

// opClass says how much a method may be retried; see the package doc.
type opClass int

const (
	classRead       opClass = iota // no side effects: retry on any Retryable error
	classIdempotent                // Put, Delete: applying twice is harmless
	classWrite                     // CAS, membership: retry only when provably not applied
)

func (k opClass) isWrite() bool { return k != classRead }

// attemptResult is what one RPC attempt tells the retry loop.
type attemptResult struct {
	err error
	// peer is what grpc.Peer recorded for the attempt: an address once
	// gRPC handed the RPC to a transport (rpctypes.NeverSent).
	peer peer.Peer
}

func (a attemptResult) shouldRetry(k opClass) bool {
	switch k {
	case classRead:
		return rpctypes.Retryable(a.err)
	case classIdempotent:
		r := rpctypes.ReasonOf(a.err)
		if r == rpctypes.ReasonIndeterminate || r == rpctypes.ReasonDeadline ||
			status.Code(a.err) == codes.DeadlineExceeded {
			return false
		}
		return rpctypes.Retryable(a.err)
	default:
		switch rpctypes.ReasonOf(a.err) {
		case rpctypes.ReasonNotLeader, rpctypes.ReasonNoLeader, rpctypes.ReasonShuttingDown,
			rpctypes.ReasonWrongRange, rpctypes.ReasonUnknownRange:
			return rpctypes.NotApplied(a.err)
		}
		return a.neverSent()
	}
}

// neverSent recognises an RPC that failed because no connection could be
// established, so the server cannot have seen it; otherwise the request
// is assumed to have been sent.
func (a attemptResult) neverSent() bool { return rpctypes.NeverSent(a.err, &a.peer) }

// fateKnown reports whether a failed write attempt certainly left no trace,
// or was answered by a server that checked it (and refused it) before
// applying anything.
func (a attemptResult) fateKnown() bool {
	if a.neverSent() || rpctypes.NotApplied(a.err) {
		return true
	}
	switch rpctypes.ReasonOf(a.err) {
	case rpctypes.ReasonKeyNotFound, rpctypes.ReasonUnknownNode, rpctypes.ReasonMemberConflict:
		return true
	}
	if rpctypes.InfoOf(a.err) == nil {
		switch status.Code(a.err) {
		case codes.InvalidArgument, codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied:
			return true
		}
	}
	return false
}

// leaderHint returns the leader address an error names, if it is usable.
func leaderHint(err error) string {
	info := rpctypes.InfoOf(err)
	if info == nil {
		return ""
	}
	addr := info.GetMetadata()[rpctypes.MetaLeaderAddr]
	// A node announcing its wildcard listen address gives nothing to dial.
	if !dialable(addr) {
		return ""
	}
	return addr
}

// retryDelay returns the pause before attempt+1: exponential from
// BackoffBase, capped at BackoffMax, with "equal jitter" so clients that
// failed together do not retry together.
func retryDelay(base, maxDelay time.Duration, attempt int) time.Duration {
	d := maxDelay
	if attempt < 32 {
		if e := base << (attempt - 1); e > 0 && e < maxDelay {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits d or until ctx ends. It gives up at once when ctx's deadline
// would pass before d, since no attempt could follow.
func sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
