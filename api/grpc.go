package api

import (
	"github.com/dialkv/dialkv/api/kvpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// NewGRPCServer returns a gRPC server with the KV and Cluster services,
// the standard health service and server reflection (so grpcurl works).
// The same server also serves the node's internal listener, which carries
// requests forwarded between nodes.
func NewGRPCServer(svc *Service) (*grpc.Server, *health.Server) {
	srv := grpc.NewServer(
		// A compare-and-swap carries two values and a key.
		grpc.MaxRecvMsgSize(2*svc.limits.MaxValueBytes+2*svc.limits.MaxKeyBytes+64<<10),
		grpc.MaxSendMsgSize(64<<20),
	)
	kvpb.RegisterKVServer(srv, svc)
	kvpb.RegisterClusterServer(srv, svc)
	kvpb.RegisterInternalServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv, hs
}
