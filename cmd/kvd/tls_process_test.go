package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/tlsconf"
)

// peerHandshake dials a Raft port with a certificate and reports whether
// the node refused it: a refusal arrives as a TLS alert on the first read,
// an accepted connection waits for its header and the read times out.
func peerHandshake(t *testing.T, addr string, cfg *tls.Config) (refused bool, err error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return true, err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	_, err = c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, nil
	}
	return true, err
}

func TestTLSCluster_Process(t *testing.T) {
	outer := t
	bins := harness.BuildBinaries(t, t.TempDir(), "github.com/dialkv/dialkv/cmd/kvd", "github.com/dialkv/dialkv/cmd/kvctl")
	kvd, kvctl := bins[0], bins[1]
	base, err := harness.FreePortBase(4, 3)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	harness.StartServer(t, exec.Command(kvd, "cluster", "--tls", "--nodes", "3", "--data-dir", data, "--port-base", fmt.Sprint(base)),
		harness.ProcOptions{DeathSignal: syscall.SIGTERM}, filepath.Join(data, "cluster.out"), "is ready", 90*time.Second)
	certs := filepath.Join(data, "certs")
	path := func(name string) string { return filepath.Join(certs, name) }
	grpcAddr := func(i int) string { g, _, _ := nodePorts(base, i); return harness.Addr(g) }
	httpURL := func(i int) string { _, h, _ := nodePorts(base, i); return "https://" + harness.Addr(h) }
	raftAddr := func(i int) string { _, _, r := nodePorts(base, i); return harness.Addr(r) }

	// Certificates the cluster never made: another CA's, an expired one,
	// and a node certificate naming a node that is not a member.
	other := filepath.Join(data, "other")
	for _, args := range [][]string{
		{"cert", "create-ca", "--dir", other},
		{"cert", "client", "root", "--dir", other},
		{"cert", "node", "n9", "--dir", certs},
		{"cert", "node", "n4", "--dir", certs},
	} {
		if out, err := exec.Command(kvd, args...).CombinedOutput(); err != nil {
			t.Fatalf("kvd %v: %v\n%s", args, err, out)
		}
	}
	ca, err := tlsconf.LoadCA(certs)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.IssueClient("old", tlsconf.Lifetime{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Write(certs, "old"); err != nil {
		t.Fatal(err)
	}

	kvctlRun := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(kvctl, append([]string{"--endpoints", grpcAddr(1) + "," + grpcAddr(2), "--timeout", "3s"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("kvctl %v: %v", args, err)
		}
		return string(out), 0
	}
	good := []string{"--cacert", path("ca.crt"), "--cert", path("root.crt"), "--key", path("root.key")}

	t.Run("kvctl put and get", func(t *testing.T) {
		if out, code := kvctlRun(nil, append(good, "put", "greeting", "hello")...); code != 0 {
			t.Fatalf("put: exit %d: %s", code, out)
		}
		env := []string{"KVCTL_CACERT=" + path("ca.crt"), "KVCTL_CERT=" + path("root.crt"), "KVCTL_KEY=" + path("root.key")}
		if out, code := kvctlRun(env, "get", "greeting"); code != 0 || strings.TrimSpace(out) != "hello" {
			t.Fatalf("get through KVCTL_* env: exit %d: %q", code, out)
		}
	})

	t.Run("kvctl refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"plaintext", nil},
			{"no client certificate", []string{"--cacert", path("ca.crt")}},
			{"wrong CA verifying the node", []string{"--cacert", filepath.Join(other, "ca.crt"), "--cert", filepath.Join(other, "root.crt"), "--key", filepath.Join(other, "root.key")}},
			{"client certificate of another CA", []string{"--cacert", path("ca.crt"), "--cert", filepath.Join(other, "root.crt"), "--key", filepath.Join(other, "root.key")}},
			{"expired client certificate", []string{"--cacert", path("ca.crt"), "--cert", path("old.crt"), "--key", path("old.key")}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, code := kvctlRun(nil, append(tc.args, "get", "greeting")...)
				if code == 0 || strings.Contains(out, "hello") {
					t.Fatalf("exit %d, output %q: want a refusal", code, out)
				}
			})
		}
	})

	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	pair := func(dir, name string) tls.Certificate {
		t.Helper()
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("https", func(t *testing.T) {
		get := func(certs []tls.Certificate, url string) (int, string, error) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), err
		}
		code, body, err := get([]tls.Certificate{pair(certs, "root")}, httpURL(2)+"/v1/kv/greeting")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "hello") {
			t.Fatalf("GET with the root certificate: %d %q %v", code, body, err)
		}
		if _, _, err := get(nil, httpURL(2)+"/v1/kv/greeting"); err == nil {
			t.Fatal("GET without a client certificate succeeded")
		}
		if _, _, err := get([]tls.Certificate{pair(certs, "old")}, httpURL(2)+"/v1/kv/greeting"); err == nil {
			t.Fatal("GET with an expired client certificate succeeded")
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + strings.TrimPrefix(httpURL(2), "https://") + "/v1/kv/greeting")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("plaintext GET to the TLS port answered 200: %q", b)
			}
		}
	})

	t.Run("peer port", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			cert    tls.Certificate
			refused bool
		}{
			{"member's node certificate", pair(certs, "n2"), false},
			{"client certificate", pair(certs, "root"), true},
			{"node certificate naming an unknown node", pair(certs, "n9"), true},
			{"node certificate of another CA", pair(other, "root"), true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{tc.cert}}
				refused, err := peerHandshake(t, raftAddr(1), cfg)
				if refused != tc.refused {
					t.Fatalf("refused=%v (%v), want %v", refused, err, tc.refused)
				}
			})
		}
		// Without a certificate at all, and in plaintext.
		if refused, err := peerHandshake(t, raftAddr(1), &tls.Config{RootCAs: pool, ServerName: "localhost"}); !refused {
			t.Fatalf("no client certificate accepted (%v)", err)
		}
	})

	// A node joins with TLS on every link: it is added through --join
	// (a client port) before its first peer handshake, registers itself
	// over the peer port, and members reach it there.
	t.Run("join", func(t *testing.T) {
		g, h, r := nodePorts(base, 4)
		dir := filepath.Join(data, "n4")
		logf, err := os.Create(filepath.Join(data, "n4.log"))
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"serve", "--id", "n4", "--data-dir", dir,
			"--grpc-addr", harness.Addr(g), "--http-addr", harness.Addr(h), "--raft-addr", harness.Addr(r),
			"--join", grpcAddr(1)}, nodeTLSArgs(certs, "n4")...)
		cmd := exec.Command(kvd, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		p, err := harness.Start(cmd, harness.ProcOptions{DeathSignal: syscall.SIGTERM})
		logf.Close()
		if err != nil {
			t.Fatal(err)
		}
		// n4 runs on through the rotation below.
		outer.Cleanup(func() { p.Stop(30 * time.Second) })
		c, err := client.New(client.Config{Endpoints: []string{grpcAddr(1)}, TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair(certs, "root")}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var last string
		err = harness.Poll(context.Background(), 60*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
			if done, err := p.Exited(); done {
				return false, fmt.Errorf("n4 exited: %v", err)
			}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := c.Members(ctx)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			last = fmt.Sprint(resp.Members)
			for _, m := range resp.Members {
				// grpc_addr is only written by the node's own
				// registration, which went over the peer port.
				if m.Id == "n4" && m.Reachable && m.GrpcAddr == harness.Addr(g) {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(data, "n4.log"))
			t.Fatalf("n4 did not join: %v; last members %s\nn4 log:\n%s", err, last, b)
		}
	})

	// Certificates and the CA rotate on disk under load, the way an
	// operator would: trust both CAs, re-issue every certificate from the
	// new one, then drop the old CA. No request fails, and afterwards the
	// old CA's certificates are refused on both ports.
	t.Run("rotation under load", func(t *testing.T) {
		ca2Dir := filepath.Join(data, "ca2")
		if out, err := exec.Command(kvd, "cert", "create-ca", "--dir", ca2Dir).CombinedOutput(); err != nil {
			t.Fatalf("create-ca: %v\n%s", err, out)
		}
		ca2, err := tlsconf.LoadCA(ca2Dir)
		if err != nil {
			t.Fatal(err)
		}
		ca1PEM, err := os.ReadFile(path("ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		ca2PEM, err := os.ReadFile(filepath.Join(ca2Dir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		both := x509.NewCertPool()
		both.AppendCertsFromPEM(ca1PEM)
		both.AppendCertsFromPEM(ca2PEM)
		only2 := x509.NewCertPool()
		only2.AppendCertsFromPEM(ca2PEM)
		// Keep the old CA's certificates to show they are refused later.
		for _, name := range []string{"root", "n2"} {
			for _, ext := range []string{".crt", ".key"} {
				b, err := os.ReadFile(path(name + ext))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path("old-"+name+ext), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		writeCA := func(pem []byte) {
			t.Helper()
			tmp := path("ca.crt.tmp")
			if err := os.WriteFile(tmp, pem, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path("ca.crt")); err != nil {
				t.Fatal(err)
			}
		}

		// The load: a client that trusts both CAs and reads its
		// certificate from disk at every handshake, as a client that
		// follows rotation would.
		lc, err := client.New(client.Config{
			Endpoints: []string{grpcAddr(1), grpcAddr(2), grpcAddr(3)},
			TLS: &tls.Config{RootCAs: both, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(path("root.crt"), path("root.key"))
				return &c, err
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		stop := make(chan struct{})
		type result struct {
			ok   int
			errs []error
		}
		done := make(chan result)
		go func() {
			var r result
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-stop:
					done <- r
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := lc.Put(ctx, []byte(fmt.Sprintf("load/%d", i%100)), []byte("v"))
				cancel()
				if err != nil {
					r.errs = append(r.errs, err)
				} else {
					r.ok++
				}
			}
			done <- r
		}()

		// fresh dials a node's client port with a new connection and
		// says which CA signed the certificate it serves.
		fresh := func(i int, rootCAs *x509.CertPool, cert tls.Certificate) (string, error) {
			_, h, _ := nodePorts(base, i)
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", harness.Addr(h),
				&tls.Config{RootCAs: rootCAs, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
			if err != nil {
				return "", err
			}
			defer c.Close()
			// The server's verdict on our certificate arrives with the
			// first read under TLS 1.3: ask for something.
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
				return "", err
			}
			if _, err := c.Read(make([]byte, 1)); err != nil {
				return "", err
			}
			if c.ConnectionState().PeerCertificates[0].CheckSignatureFrom(ca2.Cert) == nil {
				return "new CA", nil
			}
			return "old CA", nil
		}

		// 1. Trust both CAs.
		writeCA(append(append([]byte{}, ca1PEM...), ca2PEM...))
		probe, err := ca2.IssueClient("probe", tlsconf.Lifetime{})
		if err != nil {
			t.Fatal(err)
		}
		probeCert, err := tls.X509KeyPair(probe.CertPEM, probe.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			harness.Eventually(t, fmt.Sprintf("n%d trusts the new CA", i), 15*time.Second, func() bool {
				_, err := fresh(i, both, probeCert)
				return err == nil
			})
		}
		// 2. Re-issue every certificate from the new CA.
		for _, name := range []string{"n1", "n2", "n3", "n4", "root"} {
			var p tlsconf.Pair
			if name == "root" {
				p, err = ca2.IssueClient(name, tlsconf.Lifetime{})
			} else {
				p, err = ca2.IssueNode(name, tlsconf.Lifetime{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Write(certs, name); err != nil {
				t.Fatal(err)
			}
		}
		newRoot := pair(certs, "root")
		for i := 1; i <= 3; i++ {
			harness.Eventually(t, fmt.Sprintf("n%d serves its new certificate", i), 15*time.Second, func() bool {
				issuer, err := fresh(i, both, newRoot)
				return err == nil && issuer == "new CA"
			})
		}
		// 3. Drop the old CA.
		writeCA(ca2PEM)
		oldRoot := pair(certs, "old-root")
		for i := 1; i <= 3; i++ {
			harness.Eventually(t, fmt.Sprintf("n%d refuses the old CA's client certificate", i), 15*time.Second, func() bool {
				_, err := fresh(i, only2, oldRoot)
				return err != nil
			})
			if _, err := fresh(i, only2, newRoot); err != nil {
				t.Fatalf("n%d refuses the new CA's client certificate: %v", i, err)
			}
		}
		oldPeer := &tls.Config{RootCAs: both, ServerName: "localhost", Certificates: []tls.Certificate{pair(certs, "old-n2")}}
		newPeer := &tls.Config{RootCAs: only2, ServerName: "localhost", Certificates: []tls.Certificate{pair(certs, "n2")}}
		harness.Eventually(t, "the peer port refuses the old CA's node certificate", 15*time.Second, func() bool {
			refused, _ := peerHandshake(t, raftAddr(1), oldPeer)
			return refused
		})
		if refused, err := peerHandshake(t, raftAddr(1), newPeer); refused {
			t.Fatalf("the peer port refuses the new CA's node certificate: %v", err)
		}
		if out, code := kvctlRun(nil, append(good, "get", "greeting")...); code != 0 || strings.TrimSpace(out) != "hello" {
			t.Fatalf("kvctl with the new certificates: exit %d: %q", code, out)
		}
		close(stop)
		r := <-done
		if len(r.errs) > 0 || r.ok == 0 {
			t.Fatalf("load during rotation: %d puts ok, %d failed (first: %v)", r.ok, len(r.errs), errors.Join(r.errs[:min(3, len(r.errs))]...))
		}
		t.Logf("%d puts during rotation, none failed", r.ok)
	})
}
