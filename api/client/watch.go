package client

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// StreamRetries bounds how many times in a row Watch and KeepAlive open a
// new stream that then delivers nothing before they give up. A stream that
// delivered something starts the count again. Attempts are spaced by the
// client's backoff (25ms doubling to 1s), so the bound is about seven
// seconds of trying, longer than a leader election takes.
const StreamRetries = 10

// WatchOptions says what to watch: exactly one of Key, Prefix, or Start
// with an optional End (empty: to the end of the key space).
type WatchOptions struct {
	Key, Prefix, Start, End []byte
	// From resumes after a cursor an earlier watch delivered
	// (WatchResponse.Cursor); empty watches from now.
	From string
	// PrevValue asks for each event's previous value.
	PrevValue bool
	// ProgressInterval is how often an idle watch carries a progress
	// message (0: the server's default, 1 s; at most a minute).
	ProgressInterval time.Duration
}

func (o WatchOptions) request() *kvpb.WatchRequest {
	req := &kvpb.WatchRequest{Key: o.Key, Prefix: o.Prefix, Start: o.Start, End: o.End, From: o.From, PrevValue: o.PrevValue}
	if o.ProgressInterval != 0 {
		req.ProgressInterval = durationpb.New(o.ProgressInterval)
	}
	return req
}

// Watch streams the committed writes to the keys opts names, in index
// order per range, as an iterator of messages: events with the cursor
// after them, and progress messages (no events) saying everything up to
// their cursor has been delivered. It ends when the caller stops
// iterating, or with one final error.
//
// When the stream breaks (a node stops or is cut off, or answers
// UNAVAILABLE), Watch opens a new one on the next endpoint, from the
// cursor of the last message it delivered, so the caller sees every event
// once, with no gap: the server starts a watch from a cursor exactly
// after it. It tries StreamRetries times in a row, then gives up with the
// last error. Errors that another attempt cannot change end the watch at
// once: COMPACTED (the cursor is older than what the cluster retains:
// re-read, then watch from now), INVALID_ARGUMENT, PERMISSION_DENIED, an
// UNAUTHENTICATED that authenticating again does not cure, and the
// caller's context.
func (c *Client) Watch(ctx context.Context, opts WatchOptions) iter.Seq2[*kvpb.WatchResponse, error] {
	return func(yield func(*kvpb.WatchResponse, error) bool) {
		req := opts.request()
		cursor := opts.From
		failures := 0
		renewed := false
		// Each iteration opens one stream; it ends the watch, or counts
		// a failure, or follows a stream that delivered something. The
		// failures are bounded by StreamRetries and the delivering
		// streams by the caller, who stops iterating or cancels ctx.
		for {
			ep, cc, err := c.pool.current()
			if err != nil {
				yield(nil, &Error{Op: "watch", Endpoint: ep, Attempts: failures + 1, Err: err})
				return
			}
			req.From = cursor
			delivered, stopped, err := watchStream(ctx, cc, req, func(m *kvpb.WatchResponse) bool {
				if !yield(m, nil) {
					return false
				}
				if m.GetCursor() != "" {
					cursor = m.GetCursor()
				}
				return true
			})
			if stopped {
				return
			}
			if delivered {
				failures, renewed = 0, false
			}
			if cerr := ctx.Err(); cerr != nil {
				yield(nil, &Error{Op: "watch", Endpoint: ep, Attempts: failures + 1, Err: err, Stop: cerr})
				return
			}
			if !renewed && c.authn.renewAfter(ctx, cc, err) {
				renewed = true
				continue
			}
			failures++
			if !streamRetryable(err) || failures >= StreamRetries {
				yield(nil, &Error{Op: "watch", Endpoint: ep, Attempts: failures, Err: err})
				return
			}
			next := c.pool.advance(ep, "")
			c.log.Debug("dialkv client: watch resumes", "endpoint", ep, "next", next, "from", cursor, "attempt", failures, "err", err)
			if serr := sleep(ctx, retryDelay(c.backoffBase, c.backoffMax, failures)); serr != nil {
				yield(nil, &Error{Op: "watch", Endpoint: ep, Attempts: failures, Err: err, Stop: serr})
				return
			}
		}
	}
}

// watchStream runs one Watch stream on cc, passing each message to
// deliver until it returns false (stopped) or the stream ends (err, which
// is io.EOF when the server ended it without an error).
func watchStream(ctx context.Context, cc *grpc.ClientConn, req *kvpb.WatchRequest, deliver func(*kvpb.WatchResponse) bool) (delivered, stopped bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kv(cc).Watch(ctx, req)
	if err != nil {
		return false, false, err
	}
	// One iteration per message; Recv fails once the stream ends or ctx
	// is cancelled.
	for {
		m, err := stream.Recv()
		if err != nil {
			return delivered, false, err
		}
		delivered = true
		if !deliver(m) {
			return true, true, nil
		}
	}
}

// streamRetryable reports whether a broken Watch or KeepAlive stream is
// worth opening again elsewhere: the node or the cluster was unavailable,
// or the stream ended without a verdict; not the request wrong.
func streamRetryable(err error) bool {
	if errors.Is(err, io.EOF) || rpctypes.Retryable(err) {
		return true
	}
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonDeadline, rpctypes.ReasonTooManyConnections:
		return true
	case "":
		// A transport's verdict, not a dialkv server's: the connection
		// broke, the node cancelled its streams as it stopped, or a
		// deadline inside the cluster passed.
		switch status.Code(err) {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}
