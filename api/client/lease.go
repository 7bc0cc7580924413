package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func leases(cc *grpc.ClientConn) kvpb.LeaseClient { return kvpb.NewLeaseClient(cc) }

// Grant grants a lease that lives ttl (rounded up to whole seconds, at
// least one) without a keepalive. It is retried only when provably not
// granted, so a retry never leaves a lease nobody knows of.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (*kvpb.LeaseGrantResponse, error) {
	req := &kvpb.LeaseGrantRequest{Ttl: int64((ttl + time.Second - 1) / time.Second)}
	var resp *kvpb.LeaseGrantResponse
	err := c.invoke(ctx, "lease grant", classWrite, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = leases(cc).Grant(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Revoke ends a lease now and deletes its keys. It is retried only when
// provably not applied: a retry of a revoke that did apply would answer
// LEASE_NOT_FOUND.
func (c *Client) Revoke(ctx context.Context, id int64) (*kvpb.LeaseRevokeResponse, error) {
	req := &kvpb.LeaseRevokeRequest{Id: id}
	var resp *kvpb.LeaseRevokeResponse
	err := c.invoke(ctx, "lease revoke", classWrite, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = leases(cc).Revoke(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Leases lists the live leases.
func (c *Client) Leases(ctx context.Context) (*kvpb.LeaseListResponse, error) {
	var resp *kvpb.LeaseListResponse
	err := c.invoke(ctx, "lease list", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = leases(cc).List(ctx, &kvpb.LeaseListRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// TimeToLive reports a lease's granted and remaining TTL and, with keys,
// the keys attached to it. A lease that has ended is an error for which
// IsNotFound is true.
func (c *Client) TimeToLive(ctx context.Context, id int64, keys bool) (*kvpb.LeaseTimeToLiveResponse, error) {
	req := &kvpb.LeaseTimeToLiveRequest{Id: id, Keys: keys}
	var resp *kvpb.LeaseTimeToLiveResponse
	err := c.invoke(ctx, "lease ttl", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = leases(cc).TimeToLive(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// KeepAliveOnce renews a lease once. Renewing twice is harmless, so it is
// retried as a read is.
func (c *Client) KeepAliveOnce(ctx context.Context, id int64) (*kvpb.LeaseKeepAliveResponse, error) {
	var resp *kvpb.LeaseKeepAliveResponse
	err := c.invoke(ctx, "lease keepalive", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := leases(cc).KeepAlive(ctx, opts...)
		if err != nil {
			return err
		}
		if err := stream.Send(&kvpb.LeaseKeepAliveRequest{Id: id}); err != nil {
			// The stream broke; Recv has the reason.
			_, err = stream.Recv()
			return err
		}
		if resp, err = stream.Recv(); err != nil {
			return err
		}
		return stream.CloseSend()
	})
	if err != nil {
		return nil, err
	}
	if resp.GetTtl() <= 0 {
		return nil, &Error{Op: "lease keepalive", Err: leaseEnded(id)}
	}
	return resp, nil
}

// LeaseKeepAlive is one item of KeepAlive's channel: a renewal, or, last
// before the channel closes, why the keepalive ended.
type LeaseKeepAlive struct {
	Resp *kvpb.LeaseKeepAliveResponse
	Err  error
}

// keepAliveBuffer is how many renewals KeepAlive's channel holds for a
// consumer that does not keep up; past that it keeps the newest.
const keepAliveBuffer = 16

// KeepAlive keeps a lease alive in the background until ctx ends or the
// lease does: it renews at once, then every third of the TTL the last
// renewal answered, on one stream, moving to the next endpoint when the
// stream breaks. Each renewal is sent on the returned channel, which never
// holds the keepalive back: when the consumer falls behind, older
// renewals are dropped. The channel's last item has Err set, saying why it
// ended (IsNotFound: the lease expired or was revoked; the context; or no
// renewal answered for a whole TTL, after which the lease may have
// expired), and then it is closed.
func (c *Client) KeepAlive(ctx context.Context, id int64) <-chan LeaseKeepAlive {
	ch := make(chan LeaseKeepAlive, keepAliveBuffer)
	go c.keepAlive(ctx, id, ch)
	return ch
}

func (c *Client) keepAlive(ctx context.Context, id int64, ch chan LeaseKeepAlive) {
	defer close(ch)
	put := func(m LeaseKeepAlive) {
		select {
		case ch <- m:
			return
		default:
		}
		// Full: drop the oldest. This goroutine is the only sender, so
		// the send below has room.
		select {
		case <-ch:
		default:
		}
		ch <- m
	}
	var (
		lastOK   = time.Now()
		ttl      time.Duration // the last renewal's; 0 before the first
		failures int
		renewed  bool
	)
	// Each iteration runs one stream; failures in a row are bounded by
	// the TTL (or by StreamRetries before the first renewal), the rest by
	// ctx.
	for {
		ep, cc, err := c.pool.current()
		if err != nil {
			put(LeaseKeepAlive{Err: &Error{Op: "lease keepalive", Endpoint: ep, Err: err}})
			return
		}
		err = keepAliveStream(ctx, cc, id, func(resp *kvpb.LeaseKeepAliveResponse) {
			lastOK, ttl = time.Now(), time.Duration(resp.GetTtl())*time.Second
			failures, renewed = 0, false
			put(LeaseKeepAlive{Resp: resp})
		})
		if cerr := ctx.Err(); cerr != nil {
			put(LeaseKeepAlive{Err: &Error{Op: "lease keepalive", Endpoint: ep, Err: err, Stop: cerr}})
			return
		}
		if !renewed && c.authn.renewAfter(ctx, cc, err) {
			renewed = true
			continue
		}
		failures++
		switch {
		case !keepAliveRetryable(err):
		case ttl > 0 && time.Since(lastOK) >= ttl:
			err = fmt.Errorf("no renewal answered for the lease's TTL of %v; it may have expired: %w", ttl, err)
		case ttl == 0 && failures >= StreamRetries:
		default:
			next := c.pool.advance(ep, "")
			c.log.Debug("dialkv client: keepalive reconnects", "lease", id, "endpoint", ep, "next", next, "err", err)
			if serr := sleep(ctx, retryDelay(c.backoffBase, c.backoffMax, failures)); serr != nil {
				put(LeaseKeepAlive{Err: &Error{Op: "lease keepalive", Endpoint: ep, Attempts: failures, Err: err, Stop: serr}})
				return
			}
			continue
		}
		put(LeaseKeepAlive{Err: &Error{Op: "lease keepalive", Endpoint: ep, Attempts: failures, Err: err}})
		return
	}
}

// keepAliveStream renews lease id on one stream through cc, a third of a
// TTL apart, calling onRenew with each answer, until the stream or ctx
// ends.
func keepAliveStream(ctx context.Context, cc *grpc.ClientConn, id int64, onRenew func(*kvpb.LeaseKeepAliveResponse)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := leases(cc).KeepAlive(ctx)
	if err != nil {
		return err
	}
	// One renewal per iteration; the stream or ctx ends it.
	for {
		if err := stream.Send(&kvpb.LeaseKeepAliveRequest{Id: id}); err != nil {
			_, err = stream.Recv()
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if resp.GetTtl() <= 0 {
			return leaseEnded(id)
		}
		onRenew(resp)
		t := time.NewTimer(max(time.Duration(resp.GetTtl())*time.Second/3, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// leaseEnded is the error of a renewal that answered no time left.
func leaseEnded(id int64) error {
	return rpctypes.Error(codes.NotFound, rpctypes.ReasonLeaseNotFound, fmt.Sprintf("lease %d has ended", id), nil)
}

// keepAliveRetryable is streamRetryable, and a renewal of unknown outcome
// or refused for colliding with others too: renewing a lease twice is
// harmless, and neither a meta leader that changed in the middle of one
// nor a busy lease may end the client's keepalives.
func keepAliveRetryable(err error) bool {
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonIndeterminate, rpctypes.ReasonCompareFailed:
		return true // the latter: refused, nothing applied
	}
	return streamRetryable(err)
}
