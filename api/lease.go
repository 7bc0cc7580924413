package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// The Lease service. With auth on, any authenticated user may grant, keep
// alive, revoke and list leases: a lease by itself touches no key, and
// attaching one to a key is a Put, which checks write permission on it.

// maxLeaseTTL is the longest TTL a lease may be granted, in seconds (68
// years: longer is no lease).
const maxLeaseTTL = 1 << 31

func checkLeaseID(id int64) error {
	if id <= 0 {
		return invalid("lease id %d: lease ids are positive", id)
	}
	return nil
}

// anyUser allows every authenticated caller.
func anyUser[Req any](s *Service) func(context.Context, Req) error {
	return func(ctx context.Context, _ Req) error {
		return s.authorize(ctx, func(*auth.State, string) error { return nil })
	}
}

// Grant is Lease.Grant.
func (s *Service) Grant(ctx context.Context, req *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	return run(s, ctx, "LeaseGrant", opWrite, req, func(r *kvpb.LeaseGrantRequest) error {
		if r.Ttl < 1 || r.Ttl > maxLeaseTTL {
			return invalid("lease ttl %d seconds is outside 1..%d", r.Ttl, int64(maxLeaseTTL))
		}
		return nil
	}, guarded(anyUser[*kvpb.LeaseGrantRequest](s), s.b.LeaseGrant))
}

// keepAlive renews a lease once: one request of the KeepAlive stream, or
// POST /v1/lease/keepalive.
func (s *Service) keepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	return s.keepAliveWith(ctx, req, s.b.LeaseKeepAlive)
}

func (s *Service) keepAliveWith(ctx context.Context, req *kvpb.LeaseKeepAliveRequest, renew func(context.Context, *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error)) (*kvpb.LeaseKeepAliveResponse, error) {
	return run(s, ctx, "LeaseKeepAlive", opWrite, req, func(r *kvpb.LeaseKeepAliveRequest) error { return checkLeaseID(r.Id) },
		guarded(anyUser[*kvpb.LeaseKeepAliveRequest](s), renew))
}

// keepAliveSessions is a backend that can keep what one stream's
// keepalives share between them (replication keeps the stream it forwards
// them to the meta leader on).
type keepAliveSessions interface {
	KeepAliveSession(ctx context.Context) (renew func(context.Context, *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error), done func())
}

// KeepAlive is Lease.KeepAlive: each request renews its lease once and is
// answered once, in order. An error ends the stream with its status
// (LEASE_NOT_FOUND once the lease has ended); the client opens a new
// stream to go on. Each request is decided and timed out on its own, so a
// stream outlives a token only as long as it sends nothing.
func (s *Service) KeepAlive(stream kvpb.Lease_KeepAliveServer) error {
	ctx := stream.Context()
	renew := s.b.LeaseKeepAlive
	if ks, ok := s.b.(keepAliveSessions); ok {
		var done func()
		renew, done = ks.KeepAliveSession(ctx)
		defer done()
	}
	// One iteration per request the client sends: the loop lasts as long
	// as the client's stream, and each Recv returns when it ends.
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.keepAliveWith(ctx, req, renew)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Revoke is Lease.Revoke.
func (s *Service) Revoke(ctx context.Context, req *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	return run(s, ctx, "LeaseRevoke", opWrite, req, func(r *kvpb.LeaseRevokeRequest) error { return checkLeaseID(r.Id) },
		guarded(anyUser[*kvpb.LeaseRevokeRequest](s), s.b.LeaseRevoke))
}

// List is Lease.List.
func (s *Service) List(ctx context.Context, req *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	return run(s, ctx, "LeaseList", opRead, req, noCheck[*kvpb.LeaseListRequest],
		guarded(anyUser[*kvpb.LeaseListRequest](s), s.b.LeaseList))
}

// TimeToLive is Lease.TimeToLive.
func (s *Service) TimeToLive(ctx context.Context, req *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	return run(s, ctx, "LeaseTimeToLive", opRead, req, func(r *kvpb.LeaseTimeToLiveRequest) error { return checkLeaseID(r.Id) },
		guarded(anyUser[*kvpb.LeaseTimeToLiveRequest](s), s.b.LeaseTimeToLive))
}

// LeaseRevokeLocal is Internal.LeaseRevokeLocal (peer port only).
func (s *Service) LeaseRevokeLocal(ctx context.Context, req *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error) {
	return run(s, ctx, "LeaseRevokeLocal", opWrite, req, func(r *kvpb.LeaseRevokeLocalRequest) error { return checkLeaseID(r.Id) }, s.b.LeaseRevokeLocal)
}

// LeaseKeys is Internal.LeaseKeys (peer port only).
func (s *Service) LeaseKeys(ctx context.Context, req *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error) {
	return run(s, ctx, "LeaseKeys", opRead, req, func(r *kvpb.LeaseKeysRequest) error { return checkLeaseID(r.Id) }, s.b.LeaseKeys)
}

// The lease routes over HTTP (registered in http.go) take and answer the
// Lease messages in protojson, as the Auth routes do (authRoute): int64
// fields, the ids and TTLs, are JSON strings in answers (so that ids past
// 2^53 survive JavaScript), and either strings or numbers in requests.

// leaseTTL serves GET /v1/lease/ttl?id=&keys=.
func (h *httpAPI) leaseTTL(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	id, err := leaseParam(r, "id")
	if err != nil {
		writeError(w, err)
		return
	}
	keys, err := boolParam(r, "keys")
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.TimeToLive(ctx, &kvpb.LeaseTimeToLiveRequest{Id: id, Keys: keys})
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, resp)
}

// leaseParam reads a lease id from the query; absent is 0.
func leaseParam(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, invalid("%s %q: want a lease id, a decimal integer", name, v)
	}
	return id, nil
}
