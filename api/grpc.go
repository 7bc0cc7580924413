package api

import (
	"context"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
)

// A node serves gRPC on two ports, and what each serves is the boundary of
// what a client can do:
//
//   - the client port (NewGRPCServer): KV, Cluster, Lease, Auth, health
//     and reflection.
//     Metadata that only a peer may set (rpctypes.PeerHeaders) is dropped
//     from every request, so a client cannot pass itself off as a node
//     forwarding a request.
//   - the peer port (NewPeerGRPCServer, reached through the Raft port's
//     mux): the same KV and Cluster services for requests forwarded between
//     nodes (Lease too), plus Internal (replica creation and removal, the
//     meta range, read index, a range's events, a lease's local keys),
//     which is never on the client port. Requests here are
//     not authorised again: the node the client reached decided (auth.go).

// grpcMaxRecv bounds one request: a compare-and-swap carries two values and
// a key.
func (s *Service) grpcMaxRecv() int {
	return 2*s.limits.MaxValueBytes + 2*s.limits.MaxKeyBytes + 64<<10
}

// streamWorkers is how many goroutines each gRPC server keeps to run
// requests (more run on goroutines of their own, as without workers).
// A kept goroutine's stack has already grown to what a request needs; a
// new one per request grows it again, copying it at each step, which took
// 7.7% of a node's CPU under 64 clients' linearizable gets (docs/
// performance.md, session 20). Long streams (watches, keepalives) hold a
// worker for their life, so there are more than a node's usual in-flight
// unary requests.
const streamWorkers = 128

// NewGRPCServer returns the client port's gRPC server: the KV, Cluster,
// Lease and Auth services, the standard health service and server reflection (so grpcurl
// works). extra options (connection limits, keepalive) are appended.
func NewGRPCServer(svc *Service, extra ...grpc.ServerOption) (*grpc.Server, *health.Server) {
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(svc.grpcMaxRecv()),
		grpc.MaxSendMsgSize(64 << 20),
		grpc.ForceServerCodecV2(newWatchCodec()),
		grpc.ChainUnaryInterceptor(dropPeerHeadersUnary),
		grpc.ChainStreamInterceptor(dropPeerHeadersStream),
		grpc.NumStreamWorkers(streamWorkers),
	}, extra...)
	srv := grpc.NewServer(opts...)
	svc.watchCodec = true
	kvpb.RegisterKVServer(srv, svc)
	kvpb.RegisterClusterServer(srv, svc)
	kvpb.RegisterLeaseServer(srv, svc)
	kvpb.RegisterAuthServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}

// NewPeerGRPCServer returns the peer port's gRPC server: KV, Cluster and
// Lease for forwarded requests, and Internal.
func NewPeerGRPCServer(svc *Service) *grpc.Server {
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(svc.grpcMaxRecv()),
		grpc.MaxSendMsgSize(64<<20),
		grpc.ForceServerCodecV2(newWatchCodec()),
		grpc.ChainUnaryInterceptor(markPeerUnary),
		grpc.ChainStreamInterceptor(markPeerStream),
		grpc.NumStreamWorkers(streamWorkers),
	)
	svc.watchCodec = true
	kvpb.RegisterKVServer(srv, svc)
	kvpb.RegisterClusterServer(srv, svc)
	kvpb.RegisterLeaseServer(srv, svc)
	kvpb.RegisterInternalServer(srv, svc)
	return srv
}

// withoutPeerHeaders returns ctx with the peer-only metadata removed.
func withoutPeerHeaders(ctx context.Context) context.Context {
	// Looking each header up copies nothing; the whole metadata is copied
	// only in the rare request that carries one (every request passes here).
	present := false
	for _, k := range rpctypes.PeerHeaders {
		if metadata.ValueFromIncomingContext(ctx, k) != nil {
			present = true
			break
		}
	}
	if !present {
		return ctx
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	var clean metadata.MD
	for _, k := range rpctypes.PeerHeaders {
		if _, set := md[k]; set {
			if clean == nil {
				clean = md.Copy()
			}
			delete(clean, k)
		}
	}
	if clean == nil {
		return ctx
	}
	return metadata.NewIncomingContext(ctx, clean)
}

func dropPeerHeadersUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(withoutPeerHeaders(ctx), req)
}

func dropPeerHeadersStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &cleanStream{ServerStream: ss, ctx: withoutPeerHeaders(ss.Context())})
}

// cleanStream is a server stream whose context has no peer-only metadata.
type cleanStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *cleanStream) Context() context.Context { return c.ctx }
