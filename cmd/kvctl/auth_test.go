package main

import (
	"context"
	"golang.org/x/crypto/bcrypt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api"
	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

func TestKvctl_AuthErrorsExitSix(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"permission denied", rpctypes.Error(codes.PermissionDenied, rpctypes.ReasonPermissionDenied, "user \"ro\" may not write key \"k\"", nil)},
		{"unauthenticated", rpctypes.Error(codes.Unauthenticated, rpctypes.ReasonUnauthenticated, "token expired", nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.SetNodes(srv.Node())
			srv.Fail(clienttest.MethodPut, 100, tt.err)
			r := kvctl(t, invocation{}, at(srv.Addr, "put", "k", "v")...)
			if r.code != exitAuth || !strings.HasPrefix(r.stderr, "Error: ") {
				t.Fatalf("exit %d, stderr %q; want %d", r.code, r.stderr, exitAuth)
			}
			if n := srv.Calls(clienttest.MethodPut); n != 1 {
				t.Fatalf("put was sent %d times; an auth refusal is not retried", n)
			}
		})
	}
}

// startAuthNode runs a one-node cluster in this process with auth wired
// as kvd serve wires it, and returns its client gRPC address.
func startAuthNode(t *testing.T) string {
	t.Helper()
	ports, err := harness.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := replication.DefaultConfig()
	cfg.NodeID, cfg.DataDir = "n1", t.TempDir()
	cfg.RaftAddr, cfg.GRPCAddr = harness.Addr(ports[0]), harness.Addr(ports[1])
	cfg.Replicas = 1
	cfg.InitialCluster = []replication.Peer{{ID: "n1", RaftAddr: cfg.RaftAddr}}
	cfg.Timing = shard.Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond, Commit: 10 * time.Millisecond}
	cfg.CommitInterval = 5 * time.Millisecond
	node, err := replication.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc := api.NewService(node, api.DefaultLimits(), api.NewMetrics(prometheus.NewRegistry()), nil)
	store := replication.NewAuthStore(node)
	svc.SetAuth(store, 0)
	svc.SetPasswordCost(bcrypt.MinCost)
	srv, _ := api.NewGRPCServer(svc)
	peer := api.NewPeerGRPCServer(svc)
	go peer.Serve(node.InternalListener())
	ln, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Stop()
		peer.Stop()
		store.Close()
		node.Close()
	})
	return cfg.GRPCAddr
}

// TestKvctl_UsersAndRoles follows docs/security.md (the README shows its
// start): a root user, auth on, a prefix-scoped user; then an allowed and
// a denied request.
func TestKvctl_UsersAndRoles(t *testing.T) {
	ep := startAuthNode(t)
	harness.Eventually(t, "the node confirms its auth state", 30*time.Second, func() bool {
		return kvctl(t, invocation{}, at(ep, "auth", "status")...).code == exitOK
	})
	steps := [][]string{
		{"user", "add", "root", "--password", "rootpw"},
		{"user", "grant-role", "root", "root"},
		{"auth", "enable"},
		{"--user", "root:rootpw", "role", "add", "app"},
		{"--user", "root:rootpw", "role", "grant-permission", "app", "readwrite", "app/", "--prefix"},
		{"--user", "root", "--password", "rootpw", "user", "grant-role", "alice", "app"},
	}
	for i, s := range steps {
		if i == 5 {
			// user add reads the password from stdin when it is no terminal.
			mustRun(t, invocation{stdin: "alicepw\n"}, at(ep, "--user", "root:rootpw", "user", "add", "alice")...)
		}
		mustRun(t, invocation{}, at(ep, s...)...)
	}
	alice := invocation{env: map[string]string{"KVCTL_USER": "alice", "KVCTL_PASSWORD": "alicepw"}}
	mustRun(t, alice, at(ep, "put", "app/1", "hello")...)
	if got := mustRun(t, alice, at(ep, "get", "app/1")...); got != "hello" {
		t.Fatalf("alice reads app/1: %q", got)
	}
	for _, tt := range []struct {
		name string
		inv  invocation
		args []string
	}{
		{"outside her prefix", alice, []string{"put", "other/1", "x"}},
		{"a scan past her prefix", alice, []string{"scan", "app/", "zzz"}},
		{"an admin command", alice, []string{"user", "list"}},
		{"no credentials", invocation{}, []string{"get", "app/1"}},
		{"a wrong password", invocation{}, []string{"--user", "alice:nope", "get", "app/1"}},
	} {
		if r := kvctl(t, tt.inv, at(ep, tt.args...)...); r.code != exitAuth {
			t.Errorf("%s: exit %d (stderr %q), want %d", tt.name, r.code, r.stderr, exitAuth)
		}
	}
	if got := mustRun(t, invocation{}, at(ep, "--user", "root:rootpw", "user", "list")...); got != "alice\nroot\n" {
		t.Errorf("user list: %q", got)
	}
	if got := mustRun(t, invocation{}, at(ep, "--user", "root:rootpw", "role", "get", "app")...); !strings.Contains(got, `readwrite prefix "app/"`) {
		t.Errorf("role get app: %q", got)
	}
	out := mustRun(t, invocation{}, at(ep, "--user", "root:rootpw", "role", "revoke-permission", "app", "app/", "--prefix")...)
	if !strings.Contains(out, "lagging nodes may honour the old permission for at most 5s") {
		t.Errorf("revoke-permission printed %q; want the revocation bound", out)
	}
	if r := kvctl(t, alice, at(ep, "get", "app/1")...); r.code != exitAuth {
		t.Errorf("alice after the revocation: exit %d, want %d", r.code, exitAuth)
	}
	var st map[string]any
	for _, o := range decodeLines(t, mustRun(t, invocation{}, at(ep, "--user", "root:rootpw", "-w", "json", "auth", "status")...)) {
		st = o
	}
	if st["enabled"] != true || st["user"] != "root" {
		t.Errorf("auth status: %v", st)
	}
}
