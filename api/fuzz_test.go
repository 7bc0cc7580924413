package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/crypto/bcrypt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The fuzz targets here feed the API's request decoding what a client
// could send: HTTP requests to the real handler, protobuf bytes to every
// Service method, and the strings the API parses on its own. The
// properties are the issue's: no panic, no hang, and a refused request
// changes nothing. `make fuzz-smoke` (run by `make test`) fuzzes each
// target for a few seconds, `make fuzz` for FUZZTIME.

const (
	// fuzzRequestTimeout bounds each request's context, as a client's
	// deadline would; the fake backend answers at once, so nothing waits
	// on it unless the API itself blocks.
	fuzzRequestTimeout = 2 * time.Second
	// fuzzHangAfter is when a request that has not returned counts as a
	// hang: well past its context's deadline.
	fuzzHangAfter = 10 * time.Second
	// fuzzTokenTTL outlives any fuzz run, so the fixture's tokens stay
	// good however long `make fuzz` runs.
	fuzzTokenTTL = 365 * 24 * time.Hour
	// fuzzPassword is the root and alice users' password.
	fuzzPassword = "fuzz-pw"
)

// memAuth is an in-memory AuthBackend: mutations apply to the held state
// at once, so it is always current, and stale makes every Check report
// the state unconfirmed.
type memAuth struct {
	mu    sync.Mutex
	st    *auth.State
	stale bool
}

var _ AuthBackend = (*memAuth)(nil)

func (m *memAuth) Check(time.Time) (*auth.State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stale {
		return m.st, auth.ErrAuthStale
	}
	return m.st, nil
}

func (m *memAuth) Mutate(_ context.Context, mut auth.Mutation) (auth.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next, res, err := mut.Apply(m.st)
	if err != nil {
		return res, err
	}
	m.st = next
	return res, nil
}

// Refresh has nothing to catch up on: the held state is the cluster's.
func (*memAuth) Refresh(context.Context) error { return nil }

func (m *memAuth) revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.Revision()
}

// authFixture is an auth state with users root (the root role) and alice
// (read and write on the prefix "a"), disabled and enabled, and a token
// for each user. Hashing the password takes bcrypt's time, so a fuzz
// target builds it once and every input starts from it (states are
// immutable).
type authFixture struct {
	disabled, enabled     *auth.State
	rootToken, aliceToken string
}

func newAuthFixture(tb testing.TB) authFixture {
	tb.Helper()
	key, err := auth.NewSigningKey()
	if err != nil {
		tb.Fatal(err)
	}
	st, err := auth.NewState(key)
	if err != nil {
		tb.Fatal(err)
	}
	hash, err := auth.HashPasswordCost(fuzzPassword, bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range []auth.Mutation{
		{Kind: auth.MutAddUser, User: "root", PasswordHash: hash},
		{Kind: auth.MutGrantRole, User: "root", Role: auth.RootRole},
		{Kind: auth.MutAddUser, User: "alice", PasswordHash: hash},
		{Kind: auth.MutAddRole, Role: "a-rw"},
		{Kind: auth.MutGrantPermission, Role: "a-rw", Permission: auth.Permission{Access: auth.ReadWrite, Key: []byte("a"), Match: auth.MatchPrefix}},
		{Kind: auth.MutGrantRole, User: "alice", Role: "a-rw"},
	} {
		if st, _, err = m.Apply(st); err != nil {
			tb.Fatalf("fixture %s: %v", m.Kind, err)
		}
	}
	fx := authFixture{disabled: st}
	if fx.enabled, _, err = st.Enable(); err != nil {
		tb.Fatal(err)
	}
	issuer := &auth.Issuer{TTL: fuzzTokenTTL}
	if fx.rootToken, _, err = issuer.Issue(fx.enabled, "root"); err != nil {
		tb.Fatal(err)
	}
	if fx.aliceToken, _, err = issuer.Issue(fx.enabled, "alice"); err != nil {
		tb.Fatal(err)
	}
	return fx
}

// Auth set-ups a fuzz input picks from (mode % 4).
const (
	modeNoAuth   = 0 // a Service without SetAuth
	modeDisabled = 1 // auth set up but not enabled
	modeEnabled  = 2
	modeStale    = 3 // enabled, but the node cannot confirm its state
)

// Credentials a fuzz input picks from (cred % 4).
const (
	credNone  = 0
	credRoot  = 1
	credAlice = 2
	credFuzz  = 3 // the input's own authorization string
)

// fuzzEnv is one input's Service over a fresh fake backend and, unless
// mode is modeNoAuth, a fresh copy of the fixture's auth state.
type fuzzEnv struct {
	svc *Service
	fb  *fakeBackend
	ma  *memAuth // nil in modeNoAuth
	reg *prometheus.Registry
}

func newFuzzEnv(fx authFixture, mode uint8) fuzzEnv {
	reg := prometheus.NewRegistry()
	fb := &fakeBackend{}
	env := fuzzEnv{fb: fb, reg: reg, svc: NewService(fb, testLimits(), NewMetrics(reg), slog.New(slog.DiscardHandler))}
	switch mode % 4 {
	case modeDisabled:
		env.ma = &memAuth{st: fx.disabled}
	case modeEnabled:
		env.ma = &memAuth{st: fx.enabled}
	case modeStale:
		env.ma = &memAuth{st: fx.enabled, stale: true}
	}
	if env.ma != nil {
		env.svc.SetAuth(env.ma, fuzzTokenTTL)
		env.svc.SetPasswordCost(bcrypt.MinCost) // bcrypt at full cost would slow every input that sets or checks a password
	}
	return env
}

func (e fuzzEnv) authRevision() uint64 {
	if e.ma == nil {
		return 0
	}
	return e.ma.revision()
}

// authorization is the credential the input presents ("" for none).
func (fx authFixture) authorization(cred uint8, fuzzed string) string {
	switch cred % 4 {
	case credRoot:
		return "Bearer " + fx.rootToken
	case credAlice:
		return "Bearer " + fx.aliceToken
	case credFuzz:
		return fuzzed
	}
	return ""
}

// runBounded runs f and fails the test if f panics or does not return
// within fuzzHangAfter. A hung f is left running: the test has failed.
func runBounded(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Sprintf("panic: %v\n%s", r, debug.Stack())
				return
			}
			done <- ""
		}()
		f()
	}()
	timer := time.NewTimer(fuzzHangAfter)
	defer timer.Stop()
	select {
	case p := <-done:
		if p != "" {
			t.Fatalf("%s: %s", what, p)
		}
	case <-timer.C:
		t.Fatalf("%s: did not return within %v (its context ends after %v)", what, fuzzHangAfter, fuzzRequestTimeout)
	}
}

// isToken reports whether s is an HTTP token (RFC 9110), which a method
// must be for a server to parse the request line.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alnum && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// isHeaderValue reports whether net/http's server would accept s as a
// header value: no control characters but tab.
func isHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzHTTPHandler sends a fuzzed method, path with query, body and
// credential to the real HTTP handler over a fake backend. The handler
// must return before a deadline, answer 2xx, 4xx or 5xx, give every error
// as the JSON error body with X-Dialkv-Reason, and, on a 4xx, have
// reached neither the backend nor the auth state.
func FuzzHTTPHandler(f *testing.F) {
	type seed struct {
		mode, cred            uint8
		authz, method, target string
		body                  string
	}
	for _, s := range []seed{
		{modeNoAuth, credNone, "", "PUT", "/v1/kv/a", "v"},
		{modeEnabled, credAlice, "", "PUT", "/v1/kv/a/b%2Fc?timeout=1s", "value"},
		{modeEnabled, credAlice, "", "PUT", "/v1/kv/b", "denied"},
		{modeNoAuth, credNone, "", "PUT", "/v1/kv/toolongkey", "v"},
		{modeEnabled, credRoot, "", "GET", "/v1/kv/a?consistency=bounded&max_staleness=250ms&timeout=1s", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/kv/a?consistency=session&session_token=7:41,2:9", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/kv/a?consistency=stale", ""},
		{modeNoAuth, credNone, "", "DELETE", "/v1/kv/a//../b", ""},
		{modeEnabled, credAlice, "", "POST", "/v1/cas/ab", `{"expected":"x","value":{"base64":"AAE="}}`},
		{modeNoAuth, credNone, "", "POST", "/v1/cas/k", `{"expect_missing":true,"value":"v"}`},
		{modeNoAuth, credNone, "", "POST", "/v1/cas/k", `{"value":"v"} {"value":"w"}`},
		{modeEnabled, credAlice, "", "GET", "/v1/scan?prefix=a&limit=10&consistency=linearizable", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/scan?start=a&end=b&limit=5", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/scan?prefix=%zz", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/cluster/status?digest=true", ""},
		{modeEnabled, credRoot, "", "GET", "/v1/cluster/members", ""},
		{modeNoAuth, credNone, "", "GET", "/healthz", ""},
		{modeNoAuth, credNone, "", "GET", "/readyz", ""},
		{modeNoAuth, credNone, "", "GET", "/metrics", ""},
		{modeNoAuth, credNone, "", "PATCH", "/v1/kv/a", ""},
		{modeNoAuth, credNone, "", "GET", "/nowhere", ""},
		{modeNoAuth, credNone, "", "GET", "/v1/kv", ""},
		{modeNoAuth, credNone, "", "POST", "/v1/./auth/status", ""},
		{modeNoAuth, credNone, "", "OPTIONS", "*", ""},
		{modeEnabled, credNone, "", "POST", "/v1/auth/authenticate", `{"user":"root","password":"` + fuzzPassword + `"}`},
		{modeDisabled, credNone, "", "POST", "/v1/auth/status", ""},
		{modeEnabled, credFuzz, "Bearer not.a.token", "POST", "/v1/auth/status", ""},
		{modeDisabled, credNone, "", "POST", "/v1/auth/enable", ""},
		{modeEnabled, credRoot, "", "POST", "/v1/auth/disable", "{}"},
		{modeEnabled, credRoot, "", "POST", "/v1/user/add", `{"name":"bob"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/user/delete", `{"name":"alice"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/user/list", ""},
		{modeEnabled, credRoot, "", "POST", "/v1/user/get", `{"name":"alice"}`},
		{modeEnabled, credAlice, "", "POST", "/v1/user/passwd", `{"name":"root","password":"x"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/user/grant-role", `{"user":"alice","role":"root"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/user/revoke-role", `{"user":"alice","role":"a-rw"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/role/add", `{"name":"b-r"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/role/delete", `{"name":"a-rw"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/role/list", ""},
		{modeEnabled, credRoot, "", "POST", "/v1/role/get", `{"name":"a-rw"}`},
		{modeEnabled, credRoot, "", "POST", "/v1/role/grant-permission", `{"role":"a-rw","permission":{"access":"READ","key":"Yg==","range_end":"Yw=="}}`},
		{modeEnabled, credRoot, "", "POST", "/v1/role/revoke-permission", `{"role":"a-rw","permission":{"key":"YQ==","prefix":true}}`},
		{modeStale, credRoot, "", "GET", "/v1/kv/a", ""},
	} {
		f.Add(s.mode, s.cred, s.authz, s.method, s.target, []byte(s.body))
	}
	fx := newAuthFixture(f)
	f.Fuzz(func(t *testing.T, mode, cred uint8, authz, method, target string, body []byte) {
		// What net/http's server would refuse before any handler runs is
		// not the API's to answer.
		u, err := url.ParseRequestURI(target)
		if err != nil || !isToken(method) || !isHeaderValue(target) || strings.ContainsRune(target, ' ') {
			return
		}
		authorization := fx.authorization(cred, authz)
		if !isHeaderValue(authorization) {
			return
		}
		env := newFuzzEnv(fx, mode)
		h := NewHTTPHandler(env.svc, env.reg, func(context.Context) error { return nil })
		ctx, cancel := context.WithTimeout(context.Background(), fuzzRequestTimeout)
		defer cancel()
		req := (&http.Request{
			Method: method, URL: u, RequestURI: target, Host: "127.0.0.1",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			RemoteAddr: "127.0.0.1:40000",
		}).WithContext(ctx)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		before := env.authRevision()
		rec := httptest.NewRecorder()
		what := fmt.Sprintf("%s %q (mode %d, cred %d)", method, target, mode%4, cred%4)
		runBounded(t, what, func() { h.ServeHTTP(rec, req) })

		res := rec.Result()
		code := res.StatusCode
		if code < 200 || code >= 600 || (code >= 300 && code < 400) {
			t.Fatalf("%s: status %d; want 2xx, 4xx or 5xx (body %q)", what, code, rec.Body.Bytes())
		}
		if ct := res.Header.Get("Content-Type"); ct == "application/json" && !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s: %d with Content-Type %s, but the body %q is not JSON", what, code, ct, rec.Body.Bytes())
		}
		if code >= 400 {
			checkHTTPErrorBody(t, what, res, rec.Body.Bytes())
		}
		if code >= 400 && code < 500 {
			if calls := env.fb.callList(); len(calls) > 0 {
				t.Errorf("%s: refused with %d, yet the backend was called (%s first)", what, code, calls[0].method)
			}
			if after := env.authRevision(); after != before {
				t.Errorf("%s: refused with %d, yet the auth state moved from revision %d to %d", what, code, before, after)
			}
		}
	})
}

// checkHTTPErrorBody checks an error answer: the JSON error body with a
// message, a reason and a gRPC code name, the reason also in
// X-Dialkv-Reason.
func checkHTTPErrorBody(t *testing.T, what string, res *http.Response, body []byte) {
	t.Helper()
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: error %d with Content-Type %q; want application/json", what, res.StatusCode, ct)
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("%s: error %d body %q is not the JSON error body: %v", what, res.StatusCode, body, err)
	}
	if eb.Error == "" || eb.Reason == "" {
		t.Errorf("%s: error body %s lacks a message or a reason", what, body)
	}
	if eb.Code == "" || eb.Code == codes.OK.String() || strings.HasPrefix(eb.Code, "Code(") {
		t.Errorf("%s: error body %s has code %q; want a gRPC error code's name", what, body, eb.Code)
	}
	if got := res.Header.Get(HeaderReason); got != eb.Reason {
		t.Errorf("%s: %s %q; the body says %q", what, HeaderReason, got, eb.Reason)
	}
}

// grpcMethod is one Service method as the gRPC server calls it: the
// request decoded from wire bytes.
type grpcMethod struct {
	name string
	// seed is a valid request, encoded as a corpus seed.
	seed proto.Message
	// call decodes data into the method's request type; ok is false when
	// the bytes are not that message, which gRPC refuses before any
	// method runs.
	call func(ctx context.Context, s *Service, data []byte) (resp proto.Message, ok bool, err error)
}

func method[Req interface {
	*R
	proto.Message
}, R any, Resp proto.Message](name string, seed Req, m func(*Service, context.Context, Req) (Resp, error)) grpcMethod {
	return grpcMethod{name: name, seed: seed, call: func(ctx context.Context, s *Service, data []byte) (proto.Message, bool, error) {
		req := Req(new(R))
		if err := proto.Unmarshal(data, req); err != nil {
			return nil, false, nil
		}
		resp, err := m(s, ctx, req)
		return resp, true, err
	}}
}

// grpcMethods is every method of the KV, Cluster, Internal and Auth
// services; a fuzz input's first byte picks one.
func grpcMethods() []grpcMethod {
	read := &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, MaxStaleness: durationpb.New(250 * time.Millisecond), SessionToken: "7:41"}
	rng := &kvpb.RangeDescriptor{Id: 9, Start: []byte("a"), End: []byte("m"), Generation: 2, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"}
	perm := &kvpb.Permission{Access: kvpb.Permission_READ, Key: []byte("b"), RangeEnd: []byte("c")}
	return []grpcMethod{
		method("Put", &kvpb.PutRequest{Key: []byte("a1"), Value: []byte("v")}, (*Service).Put),
		method("Get", &kvpb.GetRequest{Key: []byte("a1"), Read: read}, (*Service).Get),
		method("Delete", &kvpb.DeleteRequest{Key: []byte("a1")}, (*Service).Delete),
		method("CompareAndSwap", &kvpb.CompareAndSwapRequest{Key: []byte("a1"), ExpectedValue: []byte("v"), NewValue: []byte("w")}, (*Service).CompareAndSwap),
		method("Scan", &kvpb.ScanRequest{Start: []byte("a"), End: []byte("b"), Limit: 10, Read: read}, (*Service).Scan),
		method("Status", &kvpb.StatusRequest{Digest: true}, (*Service).Status),
		method("Members", &kvpb.MembersRequest{}, (*Service).Members),
		method("AddMember", &kvpb.AddMemberRequest{Id: "n4", RaftAddr: "127.0.0.1:7042", Nonvoter: true}, (*Service).AddMember),
		method("RemoveMember", &kvpb.RemoveMemberRequest{Id: "n4"}, (*Service).RemoveMember),
		method("Ranges", &kvpb.RangesRequest{}, (*Service).Ranges),
		method("SplitRange", &kvpb.SplitRangeRequest{Key: []byte("g")}, (*Service).SplitRange),
		method("TransferLeader", &kvpb.TransferLeaderRequest{RangeId: 9, ToNode: "n2"}, (*Service).TransferLeader),
		method("ReadIndex", &kvpb.ReadIndexRequest{RangeIds: []uint64{1, 9}}, (*Service).ReadIndex),
		method("MetaPut", &kvpb.MetaPutRequest{Key: []byte("range/9"), Value: bytes.Repeat([]byte{1}, 24)}, (*Service).MetaPut),
		method("MetaScan", &kvpb.MetaScanRequest{Prefix: []byte("range/")}, (*Service).MetaScan),
		method("MetaIncrement", &kvpb.MetaIncrementRequest{Key: []byte("next")}, (*Service).MetaIncrement),
		method("CreateReplica", &kvpb.CreateReplicaRequest{Range: rng}, (*Service).CreateReplica),
		method("DropReplica", &kvpb.DropReplicaRequest{RangeId: 9}, (*Service).DropReplica),
		method("ChangeReplicas", &kvpb.ChangeReplicasRequest{RangeId: 9, AddNode: "n4", RemoveNode: "n3", TransferLeaderTo: "n2"}, (*Service).ChangeReplicas),
		method("Authenticate", &kvpb.AuthenticateRequest{User: "root", Password: fuzzPassword}, (*Service).Authenticate),
		method("AuthEnable", &kvpb.AuthEnableRequest{}, (*Service).AuthEnable),
		method("AuthDisable", &kvpb.AuthDisableRequest{}, (*Service).AuthDisable),
		method("AuthStatus", &kvpb.AuthStatusRequest{}, (*Service).AuthStatus),
		method("UserAdd", &kvpb.UserAddRequest{Name: "bob"}, (*Service).UserAdd),
		method("UserDelete", &kvpb.UserDeleteRequest{Name: "alice"}, (*Service).UserDelete),
		method("UserList", &kvpb.UserListRequest{}, (*Service).UserList),
		method("UserGet", &kvpb.UserGetRequest{Name: "alice"}, (*Service).UserGet),
		method("UserChangePassword", &kvpb.UserChangePasswordRequest{Name: "alice"}, (*Service).UserChangePassword),
		method("UserGrantRole", &kvpb.UserGrantRoleRequest{User: "alice", Role: "root"}, (*Service).UserGrantRole),
		method("UserRevokeRole", &kvpb.UserRevokeRoleRequest{User: "alice", Role: "a-rw"}, (*Service).UserRevokeRole),
		method("RoleAdd", &kvpb.RoleAddRequest{Name: "b-r"}, (*Service).RoleAdd),
		method("RoleDelete", &kvpb.RoleDeleteRequest{Name: "a-rw"}, (*Service).RoleDelete),
		method("RoleList", &kvpb.RoleListRequest{}, (*Service).RoleList),
		method("RoleGet", &kvpb.RoleGetRequest{Name: "a-rw"}, (*Service).RoleGet),
		method("RoleGrantPermission", &kvpb.RoleGrantPermissionRequest{Role: "a-rw", Permission: perm}, (*Service).RoleGrantPermission),
		method("RoleRevokePermission", &kvpb.RoleRevokePermissionRequest{Role: "a-rw", Permission: &kvpb.Permission{Key: []byte("a"), Prefix: true}}, (*Service).RoleRevokePermission),
	}
}

// FuzzGRPCRequest decodes fuzzed bytes into the request type of the
// method the first byte picks, as the gRPC server does, and calls the
// Service method with a deadline. It must return before the deadline
// has long passed, with a response or a status error whose code is a
// real error code and which the gRPC transport can encode; an error means
// the request reached neither the backend nor the auth state.
func FuzzGRPCRequest(f *testing.F) {
	methods := grpcMethods()
	for i, m := range methods {
		data, err := proto.Marshal(m.seed)
		if err != nil {
			f.Fatalf("%s seed: %v", m.name, err)
		}
		f.Add(uint8(i), uint8(modeNoAuth), uint8(credNone), "", data)
		f.Add(uint8(i), uint8(modeEnabled), uint8(credRoot), "", data)
		f.Add(uint8(i), uint8(modeEnabled), uint8(credAlice), "", data)
	}
	f.Add(uint8(0), uint8(modeEnabled), uint8(credFuzz), "Bearer x.y.z", []byte{0x0a, 0x02, 'a', '1'})
	fx := newAuthFixture(f)
	f.Fuzz(func(t *testing.T, sel, mode, cred uint8, authz string, data []byte) {
		m := methods[int(sel)%len(methods)]
		env := newFuzzEnv(fx, mode)
		ctx, cancel := context.WithTimeout(context.Background(), fuzzRequestTimeout)
		defer cancel()
		if a := fx.authorization(cred, authz); a != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(AuthorizationHeader, a))
		}
		before := env.authRevision()
		var (
			resp    proto.Message
			callErr error
			decoded bool
		)
		what := fmt.Sprintf("%s(%x) (mode %d, cred %d)", m.name, data, mode%4, cred%4)
		runBounded(t, what, func() { resp, decoded, callErr = m.call(ctx, env.svc, data) })
		if !decoded {
			return
		}
		if callErr == nil {
			if resp == nil || !resp.ProtoReflect().IsValid() {
				t.Fatalf("%s: no error and no response", what)
			}
			if _, err := proto.Marshal(resp); err != nil {
				t.Errorf("%s: the response does not encode: %v", what, err)
			}
			return
		}
		checkStatusError(t, what, callErr)
		if calls := env.fb.callList(); len(calls) > 0 {
			t.Errorf("%s: refused (%v), yet the backend was called (%s first)", what, callErr, calls[0].method)
		}
		if after := env.authRevision(); after != before {
			t.Errorf("%s: refused (%v), yet the auth state moved from revision %d to %d", what, callErr, before, after)
		}
	})
}

// checkStatusError checks that err is what the gRPC server can send: a
// status with an error code, carrying a dialkv reason, that encodes (its
// message and details valid UTF-8).
func checkStatusError(t *testing.T, what string, err error) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: error %v (%T) is not a gRPC status", what, err, err)
	}
	if st.Code() == codes.OK || st.Code() > codes.Unauthenticated {
		t.Errorf("%s: code %v is not an error code (err %v)", what, st.Code(), err)
	}
	if rpctypes.ReasonOf(err) == "" {
		t.Errorf("%s: error %v carries no dialkv reason", what, err)
	}
	if _, mErr := proto.Marshal(st.Proto()); mErr != nil {
		t.Errorf("%s: the status does not encode for the wire: %v (err %q)", what, mErr, st.Message())
	}
}

// FuzzSessionToken parses session token text as clients and servers do:
// a token that parses prints as text that parses back to it, and merging
// it with itself changes nothing.
func FuzzSessionToken(f *testing.F) {
	for _, s := range []string{"", "7:41", "2:1042,7:88", "7:0", "7:3,7:9", "18446744073709551615:1", "a:b", "7", ",", "7:41,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := rpctypes.ParseSessionToken(s)
		if err != nil {
			return
		}
		text := tok.String()
		again, err := rpctypes.ParseSessionToken(text)
		if err != nil {
			t.Fatalf("%q parsed, but its text %q does not: %v", s, text, err)
		}
		if !maps.Equal(tok, again) {
			t.Errorf("%q parsed as %v; its text %q parses as %v", s, tok, text, again)
		}
		merged, err := rpctypes.MergeSessionTokens(s, s)
		if err != nil || merged != text {
			t.Errorf("merging %q with itself gave %q, %v; want %q", s, merged, err, text)
		}
	})
}

// FuzzReadQuery parses the read options and timeout of a query string
// (consistency level names and durations): each either parses into what
// the Service accepts or is refused as invalid input.
func FuzzReadQuery(f *testing.F) {
	for _, s := range []struct{ consistency, staleness, timeout string }{
		{"", "", ""},
		{"linearizable", "", "2s"},
		{"bounded", "250ms", "1.5s"},
		{"session", "", "500us"},
		{"stale", "", ""},
		{"bounded", "-1s", "0"},
		{"LINEARIZABLE", "1e3s", "9999999999h"},
		{"unknown", "5", "-3ms"},
	} {
		f.Add(s.consistency, s.staleness, s.timeout)
	}
	f.Fuzz(func(t *testing.T, consistency, staleness, timeout string) {
		q := url.Values{"consistency": {consistency}, "max_staleness": {staleness}, "timeout": {timeout}}
		r := &http.Request{URL: &url.URL{Path: "/v1/kv/a", RawQuery: q.Encode()}, Header: http.Header{}}
		opts, err := readOptions(r)
		if err != nil {
			wantInvalidInput(t, "read options", err)
		} else {
			if lvl, err := parseLevel(consistency); err != nil || lvl != opts.Consistency {
				t.Errorf("consistency %q: read options say %v, parseLevel %v, %v", consistency, opts.Consistency, lvl, err)
			}
			if consistency != "" {
				if back, err := parseLevel(levelName(opts.Consistency)); err != nil || back != opts.Consistency {
					t.Errorf("level %v prints as %q, which parses as %v, %v", opts.Consistency, levelName(opts.Consistency), back, err)
				}
			}
			if ms := opts.GetMaxStaleness(); ms != nil && ms.AsDuration() <= 0 {
				t.Errorf("max_staleness %q became %v; want positive", staleness, ms.AsDuration())
			}
		}
		ctx, cancel, err := requestContext(r)
		if err != nil {
			wantInvalidInput(t, "timeout", err)
			return
		}
		defer cancel()
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("timeout %q: the request context has no deadline", timeout)
		}
	})
}

// wantInvalidInput checks that err is a refusal of the input (HTTP 400
// with reason INVALID), not some other failure.
func wantInvalidInput(t *testing.T, what string, err error) {
	t.Helper()
	var in *inputError
	if !errors.As(err, &in) || in.reason != rpctypes.ReasonInvalid {
		t.Errorf("%s: error %v (%T); want an invalid-input error", what, err, err)
	}
}

// FuzzBearerToken verifies fuzzed credentials as the Service does a
// request's authorization header: only the fixture's own tokens name a
// user, and every other string is refused as unauthenticated.
func FuzzBearerToken(f *testing.F) {
	fx := newAuthFixture(f)
	parts := strings.Split(fx.aliceToken, ".")
	for _, s := range []string{
		"", "Bearer ", "bearer x", "Bearer " + fx.rootToken, " bearer  " + fx.aliceToken + " ", fx.aliceToken,
		parts[0] + "." + parts[1] + ".", parts[0] + ".e30." + parts[2], "Basic cm9vdDpwdw==",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.", "Bearer a.b.c.d",
	} {
		f.Add(s)
	}
	issuer := &auth.Issuer{TTL: fuzzTokenTTL}
	f.Fuzz(func(t *testing.T, header string) {
		tok := bearer(header)
		var user string
		var err error
		runBounded(t, fmt.Sprintf("verify %q", header), func() { user, err = issuer.Verify(tok, fx.enabled) })
		switch {
		case err != nil:
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Errorf("token %q: error %v; want it to wrap auth.ErrUnauthenticated", tok, err)
			}
			checkStatusError(t, fmt.Sprintf("token %q", tok), toStatus(err, opRead))
		case user == "root" && tok == fx.rootToken, user == "alice" && tok == fx.aliceToken:
		default:
			t.Errorf("token %q verified as user %q, but it is no token the fixture issued", tok, user)
		}
	})
}

// FuzzBytesJSON decodes keys and values as the HTTP API takes them (a
// JSON string or {"base64": "..."}): whatever decodes encodes back to
// the same bytes.
func FuzzBytesJSON(f *testing.F) {
	for _, s := range []string{`"abc"`, `""`, `{"base64":"AAE="}`, `{"base64":""}`, `{"base64":"!!"}`, `null`, `3`, `"\u00ff\ud800"`, `{"base64":"AAE=","x":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Bytes
		if err := json.Unmarshal(data, &b); err != nil {
			return
		}
		out, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("%q decoded to %x, which does not encode: %v", data, []byte(b), err)
		}
		var again Bytes
		if err := json.Unmarshal(out, &again); err != nil || !bytes.Equal(b, again) {
			t.Errorf("%q decoded to %x, encoded as %s, decoded back to %x (%v)", data, []byte(b), out, []byte(again), err)
		}
	})
}

// TestHTTPNonCanonicalPaths pins FuzzHTTPHandler's first finding: a path
// ServeMux would clean ("/v1//scan") or complete ("/v1/kv") got its HTML
// redirect instead of the API's JSON answer. Now a path that is not
// canonical is an unknown path, and "/v1/kv" is the empty key, as
// "/v1/kv/" is.
func TestHTTPNonCanonicalPaths(t *testing.T) {
	for _, tc := range []struct {
		method, target, body string
		code                 int
		reason               rpctypes.Reason
	}{
		{"GET", "/v1//scan", "", http.StatusNotFound, rpctypes.ReasonUnknownPath},
		{"GET", "/v1/./scan?prefix=a", "", http.StatusNotFound, rpctypes.ReasonUnknownPath},
		{"GET", "/v1/cluster/status/..", "", http.StatusNotFound, rpctypes.ReasonUnknownPath},
		{"POST", "/v1/auth/../auth/status", "", http.StatusNotFound, rpctypes.ReasonUnknownPath},
		{"OPTIONS", "*", "", http.StatusNotFound, rpctypes.ReasonUnknownPath},
		{"GET", "/v1/kv", "", http.StatusBadRequest, rpctypes.ReasonInvalid},
		{"PUT", "/v1/kv", "v", http.StatusBadRequest, rpctypes.ReasonInvalid},
		{"POST", "/v1/cas", `{"value":"v","expect_missing":true}`, http.StatusBadRequest, rpctypes.ReasonInvalid},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			env := newFuzzEnv(authFixture{}, modeNoAuth)
			h := NewHTTPHandler(env.svc, env.reg, func(context.Context) error { return nil })
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode != tc.code || res.Header.Get(HeaderReason) != string(tc.reason) {
				t.Errorf("status %d, reason %q; want %d, %q (body %s)", res.StatusCode, res.Header.Get(HeaderReason), tc.code, tc.reason, rec.Body.Bytes())
			}
			checkHTTPErrorBody(t, tc.target, res, rec.Body.Bytes())
			if calls := env.fb.callList(); len(calls) > 0 {
				t.Errorf("the backend was called (%s first)", calls[0].method)
			}
		})
	}
}
