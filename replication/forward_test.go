package replication

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// peerConn stands in for a *grpc.ClientConn: it fills in grpc.Peer as
// gRPC does once a call has a transport (addr set), and fails every call
// with err.
type peerConn struct {
	addr net.Addr
	err  error
}

func (c peerConn) Invoke(_ context.Context, _ string, _, _ any, opts ...grpc.CallOption) error {
	for _, o := range opts {
		if po, ok := o.(grpc.PeerCallOption); ok && c.addr != nil {
			*po.PeerAddr = peer.Peer{Addr: c.addr}
		}
	}
	return c.err
}

func (c peerConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, c.err
}

// TestRecordingConn_ForwardRetriesOnlyWhatNeverLeft: forward and metaDo
// retry a request elsewhere only when its call never reached a transport.
// A peer that answers with a dial failure of its own (it could not reach
// a third node) did receive the request, which the rule the node used
// before (status and text alone) took for never sent.
func TestRecordingConn_ForwardRetriesOnlyWhatNeverLeft(t *testing.T) {
	refused := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7001: connect: connection refused"`)
	leader := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7002}
	tests := []struct {
		name  string
		calls []peerConn // made in turn through one recordingConn
		want  bool       // after the last
	}{
		{"dial refused", []peerConn{{nil, refused}}, true},
		{"the peer reports a refused dial", []peerConn{{leader, refused}}, false},
		{"connection broke in flight", []peerConn{{leader, status.Error(codes.Unavailable, "error reading from server: EOF")}}, false},
		{"a call that reached, then one refused", []peerConn{{leader, refused}, {nil, refused}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordingConn{}
			var err error
			for _, c := range tc.calls {
				rc.cc = c
				err = rc.Invoke(context.Background(), "/dialkv.Internal/Test", nil, nil)
			}
			if got := rc.neverSent(err); got != tc.want {
				t.Errorf("neverSent(%v) after %d calls = %v, want %v", err, len(tc.calls), got, tc.want)
			}
			if got := metaRetryable(err, rc); got != tc.want {
				t.Errorf("metaRetryable(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
}
