package replication_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"github.com/dialkv/dialkv/replication"
)

// certDir makes a CA and node certificates for ids in a temporary
// directory.
func certDir(t *testing.T, ids ...string) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsconf.NewCA("test CA", tlsconf.Lifetime{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Pair()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		p, err := ca.IssueNode(id, tlsconf.Lifetime{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(dir, id); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func nodeSource(t *testing.T, dir, id string) *tlsconf.Source {
	t.Helper()
	src, err := tlsconf.Load(tlsconf.Files{
		Cert: filepath.Join(dir, id+".crt"), Key: filepath.Join(dir, id+".key"), CA: filepath.Join(dir, "ca.crt"),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// accepted dials a Raft port with id's node certificate: a refused
// handshake shows as an error on the first read, an accepted connection
// waits for its header and the read times out.
func accepted(t *testing.T, dir, id, raftAddr string) bool {
	t.Helper()
	cfg, err := tlsconf.PeerClientConfig(nodeSource(t, dir, id))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", raftAddr, cfg)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	_, err = c.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Raft, forwarding and the meta range all run over mutual TLS on the peer
// port. (Per-range streams, Config.PerRangeStreams, work over it too, but
// an in-process cluster on them leaves Raft's stream readers behind at
// shutdown with or without TLS, which this package's leak check refuses.)
func TestPeerTLS_ClusterWorks(t *testing.T) {
	dir := certDir(t, "n1", "n2", "n3")
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) {
		cfg.PeerTLS = nodeSource(t, dir, cfg.NodeID)
	})
	leader := c.leader()
	for i := range 3 {
		key := fmt.Sprintf("k%d", i)
		c.mustPut(i, key, "v")
		c.mustGet((leader+1)%3, key, "v", nil)
	}
}

// A node certificate of the cluster's CA is refused on the peer port until
// its node is a member, and accepted once it is added (a join).
func TestPeerTLS_UnknownNodeRefusedUntilAdded(t *testing.T) {
	dir := certDir(t, "n1", "n2", "n3", "n9")
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) {
		cfg.PeerTLS = nodeSource(t, dir, cfg.NodeID)
	})
	c.leader()
	raft1 := c.cfgs[0].RaftAddr
	if !accepted(t, dir, "n2", raft1) {
		t.Fatal("a member's certificate was refused")
	}
	if accepted(t, dir, "n9", raft1) {
		t.Fatal("the certificate of n9, not a member, was accepted")
	}
	// Plaintext, as from a peer started without TLS: its internal gRPC
	// header and preface are no TLS record, and the connection is closed.
	plain, err := net.DialTimeout("tcp", raft1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	plain.SetDeadline(time.Now().Add(3 * time.Second))
	plain.Write([]byte("GPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	_, err = plain.Read(make([]byte, 1))
	plain.Close()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("plaintext on the TLS raft port: read %v, want the connection closed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[0].AddMember(ctx, &kvpb.AddMemberRequest{Id: "n9", RaftAddr: c.freeAddr()}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		harness.Eventually(t, fmt.Sprintf("n%d accepts n9 once added", i+1), 10*time.Second, func() bool {
			return accepted(t, dir, "n9", c.cfgs[i].RaftAddr)
		})
	}
}
