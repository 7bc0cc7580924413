package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestAuth_ClientCertificateNamesTheUser runs a node whose client port
// requires client certificates (kvd serve --client-cert-auth): a
// certificate's user is authenticated without a token, over gRPC and
// HTTP, and a token, when sent, is what counts.
func TestAuth_ClientCertificateNamesTheUser(t *testing.T) {
	pki := newTestPKI(t)
	clientTLS := func(user string) *tls.Config {
		p, err := pki.ca.IssueClient(user, tlsconf.Lifetime{})
		if err != nil {
			t.Fatal(err)
		}
		return pki.clientConfig(p)
	}
	c := newAuthClusterTLS(t, 1, &clusterTLS{server: pki.server, client: clientTLS("root")})
	tokens := setupUsers(t, c)
	an := c.nodes[0]

	dialAs := func(user string) kvpb.KVClient {
		conn, err := grpc.NewClient(an.cfg.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(user))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return kvpb.NewKVClient(conn)
	}
	put := func(kv kvpb.KVClient, token, key string) outcome {
		ctx, cancel := context.WithTimeout(withBearer(context.Background(), token), 10*time.Second)
		defer cancel()
		_, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("v")})
		return grpcOutcome(err)
	}
	rw, ghost := dialAs("rw"), dialAs("ghost")
	for _, tt := range []struct {
		name  string
		kv    kvpb.KVClient
		token string
		key   string
		want  outcome
	}{
		{"rw's certificate writes in its prefix", rw, "", "a/cert", allowed},
		{"rw's certificate is denied outside it", rw, "", "b/cert", denied},
		{"root's certificate writes anywhere", an.kv(), "", "b/cert", allowed},
		{"a token counts over the certificate", an.kv(), tokens["ro"], "a/cert", denied},
		{"a certificate of no user is refused", ghost, "", "a/cert", unauthn},
	} {
		if got := put(tt.kv, tt.token, tt.key); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS("rw")}}
	defer httpc.CloseIdleConnections()
	for _, tt := range []struct {
		req  *http.Request
		want outcome
	}{
		{httpReq("PUT", an.httpBase+"/v1/kv/a/https", "v"), allowed},
		{httpReq("GET", an.httpBase+"/v1/kv/b/read", ""), denied},
	} {
		resp, err := httpc.Do(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := httpOutcome(resp.StatusCode, resp.Header.Get(HeaderReason)); got != tt.want {
			t.Errorf("%s %s with rw's certificate: %d %s, want %s", tt.req.Method, tt.req.URL.Path, resp.StatusCode, resp.Header.Get(HeaderReason), tt.want)
		}
	}
}

// testPKI is a CA and the client-port TLS of a node n1 it signed, with
// client certificates required (kvd serve --client-cert-auth).
type testPKI struct {
	t      *testing.T
	ca     *tlsconf.CA
	pool   *x509.CertPool
	server *tls.Config
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsconf.NewCA("test CA", tlsconf.Lifetime{})
	if err != nil {
		t.Fatal(err)
	}
	caPair, err := ca.Pair()
	if err != nil {
		t.Fatal(err)
	}
	if err := caPair.Write(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	nodePair, err := ca.IssueNode("n1", tlsconf.Lifetime{})
	if err != nil {
		t.Fatal(err)
	}
	if err := nodePair.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	src, err := tlsconf.Load(tlsconf.Files{Cert: filepath.Join(dir, "n1.crt"), Key: filepath.Join(dir, "n1.key"), CA: filepath.Join(dir, "ca.crt")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	server, err := tlsconf.ServerConfig(src, true)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPair.CertPEM)
	return &testPKI{t: t, ca: ca, pool: pool, server: server}
}

// clientConfig dials a node of the PKI presenting p.
func (k *testPKI) clientConfig(p tlsconf.Pair) *tls.Config {
	k.t.Helper()
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		k.t.Fatal(err)
	}
	return &tls.Config{RootCAs: k.pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}
