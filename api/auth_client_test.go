package api

import (
	"context"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// TestAuth_GoClientAuthenticatesAndRenewsExpiredTokens drives the Go
// client's credentials against a node with auth on.
func TestAuth_GoClientAuthenticatesAndRenewsExpiredTokens(t *testing.T) {
	c := newAuthCluster(t, 1)
	setupUsers(t, c)
	an := c.nodes[0]
	expired, _, err := (&auth.Issuer{TTL: time.Minute, Now: func() time.Time { return time.Now().Add(-time.Hour) }}).Issue(an.store.State(), "rw")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     client.Config
		key     string
		authErr bool
	}{
		{"a password authenticates on first use", client.Config{Username: "rw", Password: "rw-pw"}, "a/1", false},
		{"an expired token is renewed with the password", client.Config{Token: expired, Username: "rw", Password: "rw-pw"}, "a/2", false},
		{"a key outside the permissions is denied", client.Config{Username: "rw", Password: "rw-pw"}, "b/1", true},
		{"a wrong password is refused", client.Config{Username: "rw", Password: "nope"}, "a/3", true},
		{"an expired token without a password is refused", client.Config{Token: expired}, "a/4", true},
		{"no credentials are refused", client.Config{}, "a/5", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Endpoints, cfg.DisableRouting = []string{an.cfg.GRPCAddr}, true
			cl, err := client.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = cl.Put(ctx, []byte(tt.key), []byte("v"))
			if tt.authErr != client.IsAuthError(err) || (!tt.authErr && err != nil) {
				t.Fatalf("put %s: %v (auth error: %v), want auth error %v", tt.key, err, client.IsAuthError(err), tt.authErr)
			}
		})
	}
}

// TestAuth_GoClientWithCredentialsBeforeAuthIsOn: credentials given to a
// cluster with auth off are not an error, and the same client keeps
// working once auth is turned on.
func TestAuth_GoClientWithCredentialsBeforeAuthIsOn(t *testing.T) {
	c := newAuthCluster(t, 1)
	c.waitAuthReady(0)
	an := c.nodes[0]
	mustAuth(t, "user add root", func(ctx context.Context) (*kvpb.UserAddResponse, error) {
		return an.auth().UserAdd(ctx, &kvpb.UserAddRequest{Name: "root", Password: "pw"})
	})
	mustAuth(t, "grant root", func(ctx context.Context) (*kvpb.UserGrantRoleResponse, error) {
		return an.auth().UserGrantRole(ctx, &kvpb.UserGrantRoleRequest{User: "root", Role: "root"})
	})
	cl, err := client.New(client.Config{Endpoints: []string{an.cfg.GRPCAddr}, Username: "root", Password: "pw", DisableRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Put(ctx, []byte("k1"), []byte("v")); err != nil {
		t.Fatalf("put with auth off: %v", err)
	}
	mustAuth(t, "auth enable", func(ctx context.Context) (*kvpb.AuthEnableResponse, error) {
		return an.auth().AuthEnable(ctx, &kvpb.AuthEnableRequest{})
	})
	if _, err := an.kv().Put(ctx, &kvpb.PutRequest{Key: []byte("k2"), Value: []byte("v")}); grpcOutcome(err) != unauthn {
		t.Fatalf("a bare put with auth on: %v, want UNAUTHENTICATED", err)
	}
	if _, err := cl.Put(ctx, []byte("k2"), []byte("v")); err != nil {
		t.Fatalf("put once auth is on: %v", err)
	}
}
