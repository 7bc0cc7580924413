package api

import (
	"context"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestAuth_NodeCertificateJoins: with auth on, a node certificate (what a
// node joining through --join presents on a member's client port) may
// list the members and add one, as joining needs, but is no user: it may
// not touch keys or split ranges.
func TestAuth_NodeCertificateJoins(t *testing.T) {
	pki := newTestPKI(t)
	ca, tlsWith := pki.ca, pki.clientConfig
	rootPair, err := ca.IssueClient("root", tlsconf.Lifetime{})
	if err != nil {
		t.Fatal(err)
	}
	c := newAuthClusterTLS(t, 1, &clusterTLS{server: pki.server, client: tlsWith(rootPair)})
	setupUsers(t, c)
	joinerPair, err := ca.IssueNode("n9", tlsconf.Lifetime{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.nodes[0].cfg.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsWith(joinerPair))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	call := func(f func(ctx context.Context) error) outcome {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return grpcOutcome(f(ctx))
	}
	for _, tt := range []struct {
		name string
		call func(ctx context.Context) error
		want outcome
	}{
		{"list the members", func(ctx context.Context) error {
			_, err := kvpb.NewClusterClient(conn).Members(ctx, &kvpb.MembersRequest{})
			return err
		}, allowed},
		{"write a key", func(ctx context.Context) error {
			_, err := kvpb.NewKVClient(conn).Put(ctx, &kvpb.PutRequest{Key: []byte("a/node"), Value: []byte("v")})
			return err
		}, unauthn},
		{"split a range", func(ctx context.Context) error {
			_, err := kvpb.NewClusterClient(conn).SplitRange(ctx, &kvpb.SplitRangeRequest{Key: []byte("m")})
			return err
		}, unauthn},
	} {
		if got := call(tt.call); got != tt.want {
			t.Errorf("%s with a node certificate: %s, want %s", tt.name, got, tt.want)
		}
	}
}
