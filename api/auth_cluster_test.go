package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"golang.org/x/crypto/bcrypt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// authCluster runs nodes in this process as kvd serve does: client gRPC
// and HTTP ports with auth on, the peer port serving forwarded requests.
type authCluster struct {
	t     *testing.T
	nodes []*authNode
	// tls, when set, puts TLS on the client ports (gRPC and HTTP).
	tls *clusterTLS
}

// clusterTLS is the client ports' server configuration and the one the
// test's own connections dial with.
type clusterTLS struct {
	server, client *tls.Config
}

type authNode struct {
	cfg      replication.Config
	node     *replication.Node
	store    *replication.AuthStore
	grpcSrv  *grpc.Server
	peerSrv  *grpc.Server
	httpSrv  *http.Server
	conn     *grpc.ClientConn
	httpBase string
}

func newAuthCluster(t *testing.T, n int) *authCluster {
	t.Helper()
	return newAuthClusterTLS(t, n, nil)
}

func newAuthClusterTLS(t *testing.T, n int, tc *clusterTLS) *authCluster {
	t.Helper()
	c := &authCluster{t: t, tls: tc}
	logger := harness.TestLogger(t, slog.LevelWarn)
	ports, err := harness.FreePorts(3 * n)
	if err != nil {
		t.Fatal(err)
	}
	var peers []replication.Peer
	for i := range n {
		cfg := replication.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("n%d", i+1)
		cfg.DataDir = t.TempDir()
		cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = harness.Addr(ports[3*i]), harness.Addr(ports[3*i+1]), harness.Addr(ports[3*i+2])
		cfg.Replicas = min(n, 3)
		cfg.Timing = shard.Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond, Commit: 10 * time.Millisecond}
		cfg.CommitInterval = 5 * time.Millisecond
		cfg.Logger = logger
		peers = append(peers, replication.Peer{ID: cfg.NodeID, RaftAddr: cfg.RaftAddr})
		c.nodes = append(c.nodes, &authNode{cfg: cfg})
	}
	for i := range c.nodes {
		c.nodes[i].cfg.InitialCluster = peers
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

// start starts node i (again, after stop, on the same data directory).
func (c *authCluster) start(i int) {
	c.t.Helper()
	an := c.nodes[i]
	node, err := replication.Start(context.Background(), an.cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", an.cfg.NodeID, err)
	}
	svc := NewService(node, DefaultLimits(), NewMetrics(prometheus.NewRegistry()), nil)
	store := replication.NewAuthStore(node)
	svc.SetAuth(store, 0)
	svc.SetPasswordCost(bcrypt.MinCost)
	var opts []grpc.ServerOption
	dial := insecure.NewCredentials()
	an.httpBase = "http://" + an.cfg.HTTPAddr
	httpSrv := &http.Server{Handler: NewHTTPHandler(svc, prometheus.NewRegistry(), node.Ready)}
	if c.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.tls.server)))
		dial = credentials.NewTLS(c.tls.client)
		an.httpBase = "https://" + an.cfg.HTTPAddr
		httpSrv.TLSConfig = c.tls.server
	}
	grpcSrv, _ := NewGRPCServer(svc, opts...)
	peerSrv := NewPeerGRPCServer(svc)
	go peerSrv.Serve(node.InternalListener())
	gln, err := net.Listen("tcp", an.cfg.GRPCAddr)
	if err != nil {
		c.t.Fatalf("listen %s: %v", an.cfg.GRPCAddr, err)
	}
	go grpcSrv.Serve(gln)
	hln, err := net.Listen("tcp", an.cfg.HTTPAddr)
	if err != nil {
		c.t.Fatalf("listen %s: %v", an.cfg.HTTPAddr, err)
	}
	if c.tls != nil {
		go httpSrv.ServeTLS(hln, "", "")
	} else {
		go httpSrv.Serve(hln)
	}
	conn, err := grpc.NewClient(an.cfg.GRPCAddr, grpc.WithTransportCredentials(dial))
	if err != nil {
		c.t.Fatal(err)
	}
	an.node, an.store, an.grpcSrv, an.peerSrv, an.httpSrv, an.conn = node, store, grpcSrv, peerSrv, httpSrv, conn
}

// stop stops node i; its data directory stays.
func (c *authCluster) stop(i int) {
	an := c.nodes[i]
	if an.node == nil {
		return
	}
	an.conn.Close()
	an.httpSrv.Close()
	an.grpcSrv.Stop()
	an.peerSrv.Stop()
	an.store.Close()
	if err := an.node.Close(); err != nil && !errors.Is(err, shard.ErrShutdown) {
		c.t.Errorf("close %s: %v", an.cfg.NodeID, err)
	}
	an.node = nil
}

func (an *authNode) kv() kvpb.KVClient           { return kvpb.NewKVClient(an.conn) }
func (an *authNode) cluster() kvpb.ClusterClient { return kvpb.NewClusterClient(an.conn) }
func (an *authNode) auth() kvpb.AuthClient       { return kvpb.NewAuthClient(an.conn) }
