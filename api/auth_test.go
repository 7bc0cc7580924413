package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
	"github.com/dialkv/dialkv/harness"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func withBearer(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// waitAuthReady waits until node i has confirmed its auth state.
func (c *authCluster) waitAuthReady(i int) {
	c.t.Helper()
	harness.Eventually(c.t, fmt.Sprintf("n%d confirms its auth state", i+1), 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.nodes[i].auth().AuthStatus(ctx, &kvpb.AuthStatusRequest{})
		return err == nil
	})
}

// mustAuth runs an Auth call that must succeed.
func mustAuth[T any](t *testing.T, what string, call func(ctx context.Context) (T, error)) T {
	t.Helper()
	resp, _ := adminCall(t, what, call)
	return resp
}

// adminCall runs an auth admin call as a careful client does. The meta
// range may lose its leader while a loaded machine starves it: a call
// that failed before it applied (UNAVAILABLE) is tried again, and so is
// one whose answer was lost (INDETERMINATE, a deadline), after which
// ALREADY_EXISTS means the lost attempt applied. lost reports that an
// attempt's outcome was lost (the caller may then see its own earlier
// change as no change).
func adminCall[T any](t *testing.T, what string, call func(ctx context.Context) (T, error)) (resp T, lost bool) {
	t.Helper()
	var err error
	pause := 200 * time.Millisecond // an election's time over the attempts
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(pause)
			pause *= 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err = call(ctx)
		cancel()
		switch {
		case err == nil:
			return resp, lost
		case lost && (status.Code(err) == codes.AlreadyExists || status.Code(err) == codes.Unauthenticated):
			// The lost attempt applied: an add finds its own work; an
			// auth enable leaves the retry, which has no token, refused.
			return resp, lost
		case rpctypes.ReasonOf(err) == rpctypes.ReasonIndeterminate || status.Code(err) == codes.DeadlineExceeded:
			lost = true
		case status.Code(err) == codes.Unavailable:
		default:
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v; trying again", what, err)
	}
	t.Fatalf("%s: %v (5 attempts)", what, err)
	return resp, lost
}

// setupUsers makes, on node 0 with auth off, the roles and users of the
// table test, then enables auth and returns each user's token:
//
//	root  the root role
//	rw    readwrite on prefix a/
//	ro    read on prefix a/
//	none  no role
func setupUsers(t *testing.T, c *authCluster) map[string]string {
	t.Helper()
	c.waitAuthReady(0)
	a := c.nodes[0].auth()
	for _, r := range []struct {
		role   string
		access kvpb.Permission_Access
	}{{"rw", kvpb.Permission_READWRITE}, {"ro", kvpb.Permission_READ}} {
		mustAuth(t, "role add "+r.role, func(ctx context.Context) (*kvpb.RoleAddResponse, error) {
			return a.RoleAdd(ctx, &kvpb.RoleAddRequest{Name: r.role})
		})
		mustAuth(t, "grant "+r.role, func(ctx context.Context) (*kvpb.RoleGrantPermissionResponse, error) {
			return a.RoleGrantPermission(ctx, &kvpb.RoleGrantPermissionRequest{Role: r.role,
				Permission: &kvpb.Permission{Access: r.access, Key: []byte("a/"), Prefix: true}})
		})
	}
	for _, u := range []struct{ name, role string }{{"root", "root"}, {"rw", "rw"}, {"ro", "ro"}, {"none", ""}} {
		mustAuth(t, "user add "+u.name, func(ctx context.Context) (*kvpb.UserAddResponse, error) {
			return a.UserAdd(ctx, &kvpb.UserAddRequest{Name: u.name, Password: u.name + "-pw"})
		})
		if u.role != "" {
			mustAuth(t, "grant role "+u.role, func(ctx context.Context) (*kvpb.UserGrantRoleResponse, error) {
				return a.UserGrantRole(ctx, &kvpb.UserGrantRoleRequest{User: u.name, Role: u.role})
			})
		}
	}
	res, lost := adminCall(t, "auth enable", func(ctx context.Context) (*kvpb.AuthEnableResponse, error) {
		return a.AuthEnable(ctx, &kvpb.AuthEnableRequest{})
	})
	if res == nil && lost {
		st := mustAuth(t, "auth status", func(ctx context.Context) (*kvpb.AuthStatusResponse, error) {
			return a.AuthStatus(ctx, &kvpb.AuthStatusRequest{})
		})
		if !st.Enabled {
			t.Fatalf("auth enable: its answer was lost, a retry was refused, and auth is not enabled")
		}
	} else if !res.Result.Changed || res.Result.RevocationBoundSeconds != uint32(auth.DefaultRevocationBound/time.Second) {
		t.Fatalf("auth enable answered %v: want a change and the revocation bound", res.Result)
	}
	tokens := map[string]string{}
	for _, u := range []string{"root", "rw", "ro", "none"} {
		tokens[u] = mustAuth(t, "authenticate "+u, func(ctx context.Context) (*kvpb.AuthenticateResponse, error) {
			return a.Authenticate(ctx, &kvpb.AuthenticateRequest{User: u, Password: u + "-pw"})
		}).Token
	}
	return tokens
}

// outcome is what a request came to.
type outcome string

const (
	allowed outcome = "allowed"
	denied  outcome = "denied"
	unauthn outcome = "unauthenticated"
	other   outcome = "other"
)

func grpcOutcome(err error) outcome {
	switch {
	case err == nil:
		return allowed
	case status.Code(err) == codes.PermissionDenied && rpctypes.ReasonOf(err) == rpctypes.ReasonPermissionDenied:
		return denied
	case status.Code(err) == codes.Unauthenticated && rpctypes.ReasonOf(err) == rpctypes.ReasonUnauthenticated:
		return unauthn
	}
	return other
}

func httpOutcome(code int, reason string) outcome {
	switch {
	case code == http.StatusOK:
		return allowed
	case code == http.StatusForbidden && reason == string(rpctypes.ReasonPermissionDenied):
		return denied
	case code == http.StatusUnauthorized && reason == string(rpctypes.ReasonUnauthenticated):
		return unauthn
	}
	return other
}

// authOp is one request of the table, over either transport.
type authOp struct {
	name string
	// key is the key it writes (a fresh one per case) or reads.
	write bool
	grpc  func(ctx context.Context, an *authNode, key string) error
	http  func(an *authNode, key string) *http.Request
}

func httpReq(method, u string, body string) *http.Request {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, u, r)
	return req
}

var authOps = []authOp{
	{name: "get", grpc: func(ctx context.Context, an *authNode, key string) error {
		_, err := an.kv().Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
		return err
	}, http: func(an *authNode, key string) *http.Request { return httpReq("GET", an.httpBase+"/v1/kv/"+key, "") }},
	{name: "scan", grpc: func(ctx context.Context, an *authNode, key string) error {
		_, err := an.kv().Scan(ctx, &kvpb.ScanRequest{Prefix: []byte(key)})
		return err
	}, http: func(an *authNode, key string) *http.Request {
		return httpReq("GET", an.httpBase+"/v1/scan?prefix="+url.QueryEscape(key), "")
	}},
	{name: "put", write: true, grpc: func(ctx context.Context, an *authNode, key string) error {
		_, err := an.kv().Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("after")})
		return err
	}, http: func(an *authNode, key string) *http.Request {
		return httpReq("PUT", an.httpBase+"/v1/kv/"+key, "after")
	}},
	{name: "delete", write: true, grpc: func(ctx context.Context, an *authNode, key string) error {
		_, err := an.kv().Delete(ctx, &kvpb.DeleteRequest{Key: []byte(key)})
		return err
	}, http: func(an *authNode, key string) *http.Request { return httpReq("DELETE", an.httpBase+"/v1/kv/"+key, "") }},
	{name: "cas", write: true, grpc: func(ctx context.Context, an *authNode, key string) error {
		_, err := an.kv().CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte(key), ExpectedValue: []byte("before"), NewValue: []byte("after")})
		return err
	}, http: func(an *authNode, key string) *http.Request {
		return httpReq("POST", an.httpBase+"/v1/cas/"+key, `{"expected": "before", "value": "after"}`)
	}},
	{name: "admin status", grpc: func(ctx context.Context, an *authNode, _ string) error {
		_, err := an.cluster().Status(ctx, &kvpb.StatusRequest{})
		return err
	}, http: func(an *authNode, _ string) *http.Request {
		return httpReq("GET", an.httpBase+"/v1/cluster/status", "")
	}},
}

// TestAuth_EveryOperationAgainstEveryRole runs each KV operation (and an
// admin RPC) as each user over gRPC and HTTP, on keys inside and outside
// the users' prefix, and checks the verdict and, for writes, what was
// written, read back as root.
func TestAuth_EveryOperationAgainstEveryRole(t *testing.T) {
	c := newAuthCluster(t, 1)
	tokens := setupUsers(t, c)
	an := c.nodes[0]
	rootCtx := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		return withBearer(ctx, tokens["root"]), cancel
	}
	for _, k := range []string{"a/read", "b/read"} {
		ctx, cancel := rootCtx()
		if _, err := an.kv().Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte("v")}); err != nil {
			t.Fatalf("seed %s as root: %v", k, err)
		}
		cancel()
	}
	// An expired token of a real user, signed with the cluster's key.
	expired, _, err := (&auth.Issuer{TTL: time.Minute, Now: func() time.Time { return time.Now().Add(-time.Hour) }}).Issue(an.store.State(), "rw")
	if err != nil {
		t.Fatal(err)
	}
	creds := []struct {
		who   string
		token string
	}{
		{"root", tokens["root"]}, {"rw", tokens["rw"]}, {"ro", tokens["ro"]}, {"none", tokens["none"]},
		{"no token", ""}, {"garbage token", "garbage"}, {"expired token", expired},
	}
	// want[user][op+" "+prefix]
	want := func(who, op, prefix string) outcome {
		switch who {
		case "no token", "garbage token", "expired token":
			return unauthn
		case "root":
			return allowed
		case "none":
			return denied
		}
		if op == "admin status" || prefix == "b/" {
			return denied
		}
		if op == "get" || op == "scan" || who == "rw" {
			return allowed
		}
		return denied // ro writing
	}
	for _, transport := range []string{"grpc", "http"} {
		for _, cr := range creds {
			for _, op := range authOps {
				for _, prefix := range []string{"a/", "b/"} {
					if op.name == "admin status" && prefix == "b/" {
						continue
					}
					name := fmt.Sprintf("%s/%s/%s %s", transport, cr.who, op.name, prefix)
					t.Run(name, func(t *testing.T) {
						key := prefix + "read"
						if op.name == "scan" {
							key = prefix
						}
						if op.write {
							key = fmt.Sprintf("%sw-%s-%s-%s", prefix, transport, strings.ReplaceAll(cr.who, " ", "_"), op.name)
							ctx, cancel := rootCtx()
							_, err := an.kv().Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("before")})
							cancel()
							if err != nil {
								t.Fatalf("seed as root: %v", err)
							}
						}
						var got outcome
						var detail string
						if transport == "grpc" {
							ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
							err := op.grpc(withBearer(ctx, cr.token), an, key)
							cancel()
							got, detail = grpcOutcome(err), fmt.Sprint(err)
						} else {
							req := op.http(an, key)
							if cr.token != "" {
								req.Header.Set("Authorization", "Bearer "+cr.token)
							}
							resp, err := http.DefaultClient.Do(req)
							if err != nil {
								t.Fatal(err)
							}
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							got, detail = httpOutcome(resp.StatusCode, resp.Header.Get(HeaderReason)), fmt.Sprintf("%d %s", resp.StatusCode, body)
						}
						if w := want(cr.who, op.name, prefix); got != w {
							t.Fatalf("%s: got %s (%s), want %s", name, got, detail, w)
						}
						if !op.write {
							return
						}
						ctx, cancel := rootCtx()
						defer cancel()
						resp, err := an.kv().Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
						switch {
						case got == allowed && op.name == "delete":
							if status.Code(err) != codes.NotFound {
								t.Fatalf("allowed delete: read back %v, %v; want not found", resp.GetKv().GetValue(), err)
							}
						case err != nil:
							t.Fatalf("read back as root: %v", err)
						case got == allowed && !bytes.Equal(resp.Kv.Value, []byte("after")):
							t.Fatalf("allowed %s: read back %q, want after", op.name, resp.Kv.Value)
						case got != allowed && !bytes.Equal(resp.Kv.Value, []byte("before")):
							t.Fatalf("refused %s changed the key: read back %q, want before", op.name, resp.Kv.Value)
						}
					})
				}
			}
		}
	}

	t.Run("a scan crossing the permission boundary is denied", func(t *testing.T) {
		for _, u := range []string{"rw", "ro"} {
			ctx, cancel := context.WithTimeout(withBearer(context.Background(), tokens[u]), 10*time.Second)
			_, err := an.kv().Scan(ctx, &kvpb.ScanRequest{Start: []byte("a/"), End: []byte("b/z")})
			cancel()
			if grpcOutcome(err) != denied {
				t.Errorf("%s scanning [a/, b/z): %v, want PERMISSION_DENIED", u, err)
			}
			resp, err := http.DefaultClient.Do(func() *http.Request {
				r := httpReq("GET", an.httpBase+"/v1/scan?start=a/&end=b/z", "")
				r.Header.Set("Authorization", "Bearer "+tokens[u])
				return r
			}())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if httpOutcome(resp.StatusCode, resp.Header.Get(HeaderReason)) != denied {
				t.Errorf("%s scanning [a/, b/z) over HTTP: %d %s, want 403 PERMISSION_DENIED", u, resp.StatusCode, resp.Header.Get(HeaderReason))
			}
		}
	})

	t.Run("a bare token in the authorization metadata is accepted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tokens["ro"])
		if _, err := an.kv().Get(ctx, &kvpb.GetRequest{Key: []byte("a/read")}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("auth admin calls need root", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := an.auth().UserAdd(withBearer(ctx, tokens["rw"]), &kvpb.UserAddRequest{Name: "mallory", Password: "x"})
		if grpcOutcome(err) != denied {
			t.Fatalf("user add as rw: %v, want PERMISSION_DENIED", err)
		}
		_, err = an.auth().UserList(ctx, &kvpb.UserListRequest{})
		if grpcOutcome(err) != unauthn {
			t.Fatalf("user list without a token: %v, want UNAUTHENTICATED", err)
		}
		_, err = an.auth().Authenticate(ctx, &kvpb.AuthenticateRequest{User: "rw", Password: "wrong"})
		if grpcOutcome(err) != unauthn {
			t.Fatalf("authenticate with a wrong password: %v, want UNAUTHENTICATED", err)
		}
	})
}

// TestAuth_StateIsSharedRevokedWithinBoundAndSurvivesRestart runs three
// nodes: the auth state made through one is the state of all, a token from
// one works on the others, a revocation through one stops the user on
// every node within the bound it reports, and a restarted node comes back
// with the same state.
func TestAuth_StateIsSharedRevokedWithinBoundAndSurvivesRestart(t *testing.T) {
	c := newAuthCluster(t, 3)
	tokens := setupUsers(t, c)
	for i := range c.nodes {
		c.waitAuthReady(i)
	}
	authStatus := func(i int) *kvpb.AuthStatusResponse {
		return mustAuth(t, fmt.Sprintf("auth status on n%d", i+1), func(ctx context.Context) (*kvpb.AuthStatusResponse, error) {
			return c.nodes[i].auth().AuthStatus(withBearer(ctx, tokens["root"]), &kvpb.AuthStatusRequest{})
		})
	}
	want := authStatus(0)
	if !want.Enabled || want.User != "root" {
		t.Fatalf("n1 auth status %v: want enabled, as root", want)
	}
	for i := range c.nodes {
		harness.Eventually(t, fmt.Sprintf("n%d holds auth revision %d", i+1, want.Revision), 10*time.Second, func() bool {
			return authStatus(i).Revision == want.Revision
		})
		users := mustAuth(t, "user list", func(ctx context.Context) (*kvpb.UserListResponse, error) {
			return c.nodes[i].auth().UserList(withBearer(ctx, tokens["root"]), &kvpb.UserListRequest{})
		})
		if got := strings.Join(users.Users, ","); got != "none,ro,root,rw" {
			t.Errorf("n%d lists users %s", i+1, got)
		}
	}
	roGet := func(i int) error {
		ctx, cancel := context.WithTimeout(withBearer(context.Background(), tokens["ro"]), 5*time.Second)
		defer cancel()
		_, err := c.nodes[i].kv().Get(ctx, &kvpb.GetRequest{Key: []byte("a/k")})
		return err
	}
	rootCtx, cancel := context.WithTimeout(withBearer(context.Background(), tokens["root"]), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[0].kv().Put(rootCtx, &kvpb.PutRequest{Key: []byte("a/k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	for i := range c.nodes {
		if err := roGet(i); err != nil {
			t.Fatalf("ro reading a/k on n%d before the revocation (a token from n1): %v", i+1, err)
		}
	}

	// The bound is counted from before the call: an attempt whose answer
	// was lost may have revoked already.
	revoked := time.Now()
	res, lost := adminCall(t, "revoke ro's permission", func(ctx context.Context) (*kvpb.RoleRevokePermissionResponse, error) {
		return c.nodes[0].auth().RoleRevokePermission(withBearer(ctx, tokens["root"]),
			&kvpb.RoleRevokePermissionRequest{Role: "ro", Permission: &kvpb.Permission{Key: []byte("a/"), Prefix: true}})
	})
	bound := time.Duration(res.Result.RevocationBoundSeconds) * time.Second
	if (!res.Result.Revokes && !lost) || bound != auth.DefaultRevocationBound || !strings.Contains(res.Result.Message, "lagging nodes may honour the old permission for at most 5s") {
		t.Fatalf("revoke answered %v: want a revocation with the %v bound", res.Result, auth.DefaultRevocationBound)
	}
	if o := grpcOutcome(roGet(0)); o == allowed {
		t.Fatalf("ro still reads on n1, where the revocation was made: %s", o)
	}
	for i := range c.nodes {
		harness.Eventually(t, fmt.Sprintf("n%d refuses ro", i+1), bound+time.Second, func() bool {
			o := grpcOutcome(roGet(i))
			return o == denied || o == unauthn
		})
		if late := time.Since(revoked); late > bound+time.Second {
			t.Errorf("n%d refused ro only %v after the revocation; the bound is %v", i+1, late, bound)
		}
	}

	c.stop(1)
	c.start(1)
	c.waitAuthReady(1)
	after := authStatus(1)
	if !after.Enabled || after.Revision < want.Revision+1 {
		t.Fatalf("n2 after a restart: %v; want auth enabled at revision %d or later", after, want.Revision+1)
	}
	ctx, cancel2 := context.WithTimeout(withBearer(context.Background(), tokens["rw"]), 10*time.Second)
	defer cancel2()
	if _, err := c.nodes[1].kv().Put(ctx, &kvpb.PutRequest{Key: []byte("a/after-restart"), Value: []byte("v")}); err != nil {
		t.Fatalf("rw's token on the restarted n2: %v", err)
	}
	if o := grpcOutcome(roGet(1)); o == allowed {
		t.Fatal("the restarted n2 honours ro's revoked permission")
	}

	// A revoked role, through another node, stops working everywhere
	// within the bound too.
	rwPut := func(i int) outcome {
		ctx, cancel := context.WithTimeout(withBearer(context.Background(), tokens["rw"]), 5*time.Second)
		defer cancel()
		_, err := c.nodes[i].kv().Put(ctx, &kvpb.PutRequest{Key: []byte("a/rw"), Value: []byte("v")})
		return grpcOutcome(err)
	}
	revoked = time.Now()
	rr, lost := adminCall(t, "revoke rw's role", func(ctx context.Context) (*kvpb.UserRevokeRoleResponse, error) {
		return c.nodes[2].auth().UserRevokeRole(withBearer(ctx, tokens["root"]), &kvpb.UserRevokeRoleRequest{User: "rw", Role: "rw"})
	})
	if (!rr.Result.Revokes && !lost) || rr.Result.RevocationBoundSeconds != 5 {
		t.Fatalf("revoke-role answered %v: want a revocation with the 5s bound", rr.Result)
	}
	for i := range c.nodes {
		harness.Eventually(t, fmt.Sprintf("n%d refuses rw", i+1), bound+time.Second, func() bool {
			o := rwPut(i)
			return o == denied || o == unauthn
		})
		if late := time.Since(revoked); late > bound+time.Second {
			t.Errorf("n%d refused rw only %v after the revocation; the bound is %v", i+1, late, bound)
		}
	}

	// Cut off from the meta range, n1 stops deciding once it cannot
	// confirm its state within the bound: AUTH_STALE, even for root.
	c.stop(1)
	c.stop(2)
	harness.Eventually(t, "n1 answers AUTH_STALE", bound+5*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(withBearer(context.Background(), tokens["root"]), 2*time.Second)
		defer cancel()
		_, err := c.nodes[0].kv().Get(ctx, &kvpb.GetRequest{Key: []byte("a/k"), Read: &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE}})
		return status.Code(err) == codes.Unavailable && rpctypes.ReasonOf(err) == rpctypes.ReasonAuthStale
	})
}

// A token carries the auth revision it was issued at, and a node holding
// an older state catches up before it decides: right after auth is turned
// on through n1, a user's token on n2 and n3 meets auth as n1 left it, not
// the disabled state those nodes held a moment ago (a README walkthrough
// once wrote a key its user had no right to, through a node that had not
// refreshed yet).
func TestAuth_ATokenNewerThanTheNodesStateMakesItCatchUp(t *testing.T) {
	c := newAuthCluster(t, 3)
	for i := range c.nodes {
		c.waitAuthReady(i)
	}
	tokens := setupUsers(t, c) // through n1; ends with auth enable
	for i := 1; i < len(c.nodes); i++ {
		ctx, cancel := context.WithTimeout(withBearer(context.Background(), tokens["ro"]), 5*time.Second)
		_, err := c.nodes[i].kv().Put(ctx, &kvpb.PutRequest{Key: []byte(fmt.Sprintf("a/n%d", i+1)), Value: []byte("v")})
		cancel()
		if o := grpcOutcome(err); o != denied {
			t.Fatalf("ro writing through n%d right after auth was enabled through n1: %v (%s), want PERMISSION_DENIED", i+1, err, o)
		}
	}
}
