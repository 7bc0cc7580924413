package api

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
)

// newGRPCEnv serves svc with NewGRPCServer over an in-memory listener.
func newGRPCEnv(t *testing.T, limits Limits) (*grpc.ClientConn, *fakeBackend) {
	t.Helper()
	svc, fb, _ := newTestService(t, limits)
	srv, _ := NewGRPCServer(svc)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, fb
}

// TestGRPCErrorsReachClient: the status built by the error table, with
// its reason and metadata, is what a gRPC client receives.
func TestGRPCErrorsReachClient(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	kv := kvpb.NewKVClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name   string
		err    error
		call   func() error
		code   codes.Code
		reason rpctypes.Reason
	}{
		{"invalid", nil, func() error { _, err := kv.Put(ctx, &kvpb.PutRequest{}); return err }, codes.InvalidArgument, rpctypes.ReasonInvalid},
		{"too large", nil, func() error {
			_, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte("k"), Value: make([]byte, 17)})
			return err
		}, codes.InvalidArgument, rpctypes.ReasonTooLarge},
		{"not found", &replication.NotFoundError{Header: &kvpb.ReadHeader{ServedBy: "n3"}},
			func() error { _, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("k")}); return err }, codes.NotFound, rpctypes.ReasonKeyNotFound},
		{"compare failed", shard.ErrCompareFailed, func() error {
			_, err := kv.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte("k"), ExpectMissing: true})
			return err
		}, codes.Aborted, rpctypes.ReasonCompareFailed},
		{"stale replica", replication.ErrStaleReplica,
			func() error { _, err := kv.Scan(ctx, &kvpb.ScanRequest{}); return err }, codes.FailedPrecondition, rpctypes.ReasonStaleReplica},
		{"no leader", replication.ErrNoLeader,
			func() error { _, err := kv.Delete(ctx, &kvpb.DeleteRequest{Key: []byte("k")}); return err }, codes.Unavailable, rpctypes.ReasonNoLeader},
		{"member conflict", replication.ErrMemberConflict, func() error {
			_, err := kvpb.NewClusterClient(conn).AddMember(ctx, &kvpb.AddMemberRequest{Id: "n4", RaftAddr: "127.0.0.1:1"})
			return err
		}, codes.FailedPrecondition, rpctypes.ReasonMemberConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb.setHook(errHook(tc.err))
			err := tc.call()
			wantStatus(t, err, tc.code, tc.reason)
		})
	}

	fb.setHook(errHook(&replication.NotFoundError{Header: &kvpb.ReadHeader{ServedBy: "n3", SessionToken: "1:2"}}))
	_, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("k")})
	if info := rpctypes.InfoOf(err); info == nil || info.Metadata["served_by"] != "n3" || info.Metadata["session_token"] != "1:2" {
		t.Errorf("not-found metadata lost over gRPC: %v", err)
	}
}

// TestGRPCMessageSizes: a request within the limits is never refused by
// the transport (a CAS carries two values), one over them gets TOO_LARGE
// from the Service rather than a transport error.
func TestGRPCMessageSizes(t *testing.T) {
	limits := DefaultLimits()
	conn, fb := newGRPCEnv(t, limits)
	kv := kvpb.NewKVClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maxKey := []byte(strings.Repeat("k", limits.MaxKeyBytes))
	maxVal := make([]byte, limits.MaxValueBytes)

	if _, err := kv.Put(ctx, &kvpb.PutRequest{Key: maxKey, Value: maxVal}); err != nil {
		t.Errorf("Put at the limits: %v", err)
	}
	if _, err := kv.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: maxKey, ExpectedValue: maxVal, NewValue: maxVal}); err != nil {
		t.Errorf("CompareAndSwap at the limits: %v", err)
	}
	if n := fb.numCalls(); n != 2 {
		t.Errorf("backend called %d times; want 2", n)
	}
	_, err := kv.Put(ctx, &kvpb.PutRequest{Key: maxKey, Value: make([]byte, limits.MaxValueBytes+1)})
	wantStatus(t, err, codes.InvalidArgument, rpctypes.ReasonTooLarge)
	_, err = kv.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: maxKey, ExpectedValue: maxVal, NewValue: make([]byte, limits.MaxValueBytes+1)})
	wantStatus(t, err, codes.InvalidArgument, rpctypes.ReasonTooLarge)
}

// TestGRPCHealth: the standard health service is registered.
func TestGRPCHealth(t *testing.T) {
	conn, _ := newGRPCEnv(t, testLimits())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v, %v", resp, err)
	}
}
