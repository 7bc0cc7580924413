package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestAuth_CredentialsFromCertificatesAndHeaders(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	certs := []struct {
		name           string
		cert           *x509.Certificate
		wantUser, node string
	}{
		{"user URI SAN", &x509.Certificate{Subject: pkix.Name{CommonName: "cn"}, URIs: []*url.URL{uri("dialkv://user/alice")}}, "alice", ""},
		{"common name", &x509.Certificate{Subject: pkix.Name{CommonName: "bob"}}, "bob", ""},
		{"node certificate names no user", &x509.Certificate{Subject: pkix.Name{CommonName: "n1"}, URIs: []*url.URL{uri("dialkv://node/n1")}}, "", "n1"},
		{"another scheme's URI leaves the common name", &x509.Certificate{Subject: pkix.Name{CommonName: "carol"}, URIs: []*url.URL{uri("spiffe://x/y")}}, "carol", ""},
		{"no certificate names no one", nil, "", ""},
	}
	for _, tt := range certs {
		t.Run(tt.name, func(t *testing.T) {
			cs := &tls.ConnectionState{}
			if tt.cert != nil {
				cs.PeerCertificates = []*x509.Certificate{tt.cert}
			}
			c := requestCreds(withHTTPCreds(context.Background(), "", cs))
			if c.certUser != tt.wantUser || c.node != tt.node {
				t.Fatalf("user %q node %q, want %q %q", c.certUser, c.node, tt.wantUser, tt.node)
			}
		})
	}
	for _, tt := range []struct{ header, want string }{
		{"Bearer abc", "abc"}, {"bearer abc", "abc"}, {"abc", "abc"}, {"  Bearer  abc ", "abc"}, {"", ""},
	} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthorizationHeader, tt.header))
		if got := requestCreds(ctx).token; got != tt.want {
			t.Errorf("authorization %q: token %q, want %q", tt.header, got, tt.want)
		}
		if got := requestCreds(withHTTPCreds(context.Background(), tt.header, nil)).token; got != tt.want {
			t.Errorf("HTTP Authorization %q: token %q, want %q", tt.header, got, tt.want)
		}
	}
}
