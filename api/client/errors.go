package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/rpctypes"
)

var (
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("dialkv client: closed")
	// ErrNoEndpoints is returned by New when Config.Endpoints is empty.
	ErrNoEndpoints = errors.New("dialkv client: no endpoints")
)

// Error is the error every Client method returns once a request was
// attempted. It wraps the last attempt's error (a gRPC status) and, when the
// caller's context ended the retries, the context's error.
type Error struct {
	Op       string // method, e.g. "put"
	Endpoint string // endpoint of the last attempt
	Attempts int
	// Indeterminate is set on a write whose fate is unknown: some attempt
	// may have been applied. Only a later read can tell.
	Indeterminate bool
	Err           error // the last attempt's error
	Stop          error // context error that cut retries short, or nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Indeterminate {
		b.WriteString(": outcome unknown, the write may or may not have been applied")
	}
	b.WriteString(": ")
	b.WriteString(describe(e.Err))
	if e.Stop != nil {
		fmt.Fprintf(&b, "; gave up: %v", e.Stop)
	}
	if e.Endpoint != "" {
		fmt.Fprintf(&b, " (endpoint %s", e.Endpoint)
		if e.Attempts > 1 {
			fmt.Fprintf(&b, ", %d attempts", e.Attempts)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap exposes both the last attempt's error and the context error, so
// errors.Is(err, context.DeadlineExceeded) and status.FromError both work.
func (e *Error) Unwrap() []error {
	if e.Stop == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Stop}
}

// describe renders a status error as its message and reason, dropping the
// "rpc error: code = ... desc =" boilerplate users do not need.
func describe(err error) string {
	if err == nil {
		return "<nil>"
	}
	type grpcStatus interface{ GRPCStatus() *status.Status }
	gs, ok := err.(grpcStatus)
	if !ok {
		return err.Error()
	}
	st := gs.GRPCStatus()
	tag := st.Code().String()
	if r := rpctypes.ReasonOf(err); r != "" {
		tag = string(r)
	}
	return fmt.Sprintf("%s [%s]", st.Message(), tag)
}

// IsNotFound reports a missing key or an unknown node (codes.NotFound).
func IsNotFound(err error) bool {
	return err != nil && status.Code(err) == codes.NotFound
}

// IsCompareFailed reports a CompareAndSwap whose comparison failed.
func IsCompareFailed(err error) bool {
	if err == nil {
		return false
	}
	return rpctypes.ReasonOf(err) == rpctypes.ReasonCompareFailed || status.Code(err) == codes.Aborted
}

// IsUnavailable reports that the cluster could not serve the request: no
// leader, a node stopping, a replica too stale, unreachable nodes, or a
// deadline.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonNoLeader, rpctypes.ReasonNotLeader, rpctypes.ReasonShuttingDown,
		rpctypes.ReasonStaleReplica, rpctypes.ReasonDeadline:
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// IsIndeterminate reports a write whose fate is unknown: it may or may not
// have been applied.
func IsIndeterminate(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) && e.Indeterminate {
		return true
	}
	return rpctypes.ReasonOf(err) == rpctypes.ReasonIndeterminate
}

// IsInvalid reports a request the server rejected as malformed or too
// large (codes.InvalidArgument).
func IsInvalid(err error) bool {
	return err != nil && status.Code(err) == codes.InvalidArgument
}
