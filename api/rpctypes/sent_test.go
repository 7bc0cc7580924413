package rpctypes

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestNeverSent_OnlyAConnectionNeverMade: every error shape the three
// callers (client retry loop, forwarding node, Jepsen workload) meet, and
// which of them prove that the request never left.
func TestNeverSent_OnlyAConnectionNeverMade(t *testing.T) {
	const refused = `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7001: connect: connection refused"`
	none := &peer.Peer{}
	reached := &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7001}}
	tests := []struct {
		name string
		err  error
		p    *peer.Peer
		want bool
	}{
		{"dial refused, no transport", status.Error(codes.Unavailable, refused), none, true},
		{"the server's preface never came", status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: raw-read tcp 127.0.0.1:46084->127.0.0.1:17134: use of closed network connection"`), none, true},
		{"dial failed in a custom dialer", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: replication: dial 127.0.0.1:7001: i/o timeout"`), none, true},
		{"name did not resolve", status.Error(codes.Unavailable, "name resolver error: produced zero addresses"), none, true},
		{"dial refused, wrapped", fmt.Errorf("forwarding: %w", status.Error(codes.Unavailable, refused)), none, true},

		{"no error", nil, none, false},
		{"peer not recorded", status.Error(codes.Unavailable, refused), nil, false},
		{"dial text but a transport was used", status.Error(codes.Unavailable, refused), reached, false},
		// The api/client's rule said sent; the forwarding node's and the
		// Jepsen workload's rules (no peer check) said never sent.
		{"a server reporting connection refused", status.Error(codes.Unavailable, "forwarding: dial tcp: connect: connection refused"), reached, false},
		// The forwarding node's meta rule did not look at details.
		{"a dialkv answer quoting a dial failure", Error(codes.Unavailable, ReasonIndeterminate, "forwarding failed: "+refused, nil), none, false},
		{"foreign details quoting a dial failure", withDetail(t, status.New(codes.Unavailable, refused)), none, false},
		{"connection broke in flight", status.Error(codes.Unavailable, "error reading from server: EOF"), reached, false},
		{"transport closing", status.Error(codes.Unavailable, "transport is closing"), reached, false},
		{"transport closing, no peer", status.Error(codes.Unavailable, "transport is closing"), none, false},
		{"wait-for-ready ran out of time", status.Error(codes.DeadlineExceeded, "context deadline exceeded while waiting for connections to become ready; latest balancer error: "+refused), none, false},
		{"client connection closed", status.Error(codes.Canceled, "grpc: the client connection is closing"), none, false},
		{"not a status", errors.New("dial tcp 127.0.0.1:7001: connect: connection refused"), none, false},
		{"context error", context.DeadlineExceeded, none, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NeverSent(tc.err, tc.p); got != tc.want {
				t.Errorf("NeverSent(%v, %v) = %v, want %v", tc.err, tc.p, got, tc.want)
			}
		})
	}
}

func withDetail(t *testing.T, st *status.Status) error {
	t.Helper()
	st, err := st.WithDetails(&grpc_health_v1.HealthCheckResponse{})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestNeverSent_RealGRPCErrors checks the rule against what grpc-go itself
// returns, so that an upgrade that changes its texts fails here rather
// than turning every refused write into an indeterminate one (or worse).
func TestNeverSent_RealGRPCErrors(t *testing.T) {
	call := func(t *testing.T, addr string) (*peer.Peer, error) {
		t.Helper()
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var p peer.Peer
		_, err = grpc_health_v1.NewHealthClient(cc).Check(ctx, &grpc_health_v1.HealthCheckRequest{}, grpc.Peer(&p))
		if err == nil {
			t.Fatal("call succeeded")
		}
		t.Logf("err %v, peer %v", err, p.Addr)
		return &p, err
	}

	t.Run("refused connection is never sent", func(t *testing.T) {
		ln := listenLocal(t)
		addr := ln.Addr().String()
		ln.Close()
		if p, err := call(t, addr); !NeverSent(err, p) {
			t.Errorf("NeverSent(%v, peer %v) = false for a refused connection", err, p.Addr)
		}
	})

	t.Run("server answering Unavailable was sent", func(t *testing.T) {
		addr, _ := serve(t, func(ctx context.Context) error {
			return status.Error(codes.Unavailable, "dial tcp 127.0.0.1:7001: connect: connection refused")
		})
		if p, err := call(t, addr); NeverSent(err, p) {
			t.Errorf("NeverSent(%v, peer %v) = true for a server's answer", err, p.Addr)
		}
	})

	t.Run("connection broken in flight was sent", func(t *testing.T) {
		entered := make(chan struct{})
		addr, srv := serve(t, func(ctx context.Context) error {
			close(entered)
			<-ctx.Done()
			return ctx.Err()
		})
		go func() {
			<-entered
			srv.Stop() // closes the connection under the call
		}()
		p, err := call(t, addr)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v, want Unavailable (the shape this case is about)", err)
		}
		if NeverSent(err, p) {
			t.Errorf("NeverSent(%v, peer %v) = true for a request the server received", err, p.Addr)
		}
	})
}

type healthFunc struct {
	grpc_health_v1.UnimplementedHealthServer
	check func(context.Context) error
}

func (h healthFunc) Check(ctx context.Context, _ *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	return nil, h.check(ctx)
}

// serve starts a gRPC server whose health check answers with check.
func serve(t *testing.T, check func(context.Context) error) (string, *grpc.Server) {
	t.Helper()
	ln := listenLocal(t)
	srv := grpc.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, healthFunc{check: check})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String(), srv
}

// listenLocal listens on a free port of 127.0.0.1 below the kernel's
// ephemeral range (never :0, whose port any outgoing connection may take).
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	var last error
	for range 200 {
		port := 10000 + rand.IntN(32768-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return ln
		}
		last = err
	}
	t.Fatalf("no free port below 32768: %v", last)
	return nil
}
