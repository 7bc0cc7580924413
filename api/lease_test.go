package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/grpc/codes"
)

func TestLease_Validation(t *testing.T) {
	svc, fb, _ := newTestService(t, testLimits())
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		valid bool
	}{
		{"grant 1 s", func() error { _, err := svc.Grant(ctx, &kvpb.LeaseGrantRequest{Ttl: 1}); return err }, true},
		{"grant 2^31 s", func() error { _, err := svc.Grant(ctx, &kvpb.LeaseGrantRequest{Ttl: 1 << 31}); return err }, true},
		{"grant 0 s", func() error { _, err := svc.Grant(ctx, &kvpb.LeaseGrantRequest{}); return err }, false},
		{"grant -5 s", func() error { _, err := svc.Grant(ctx, &kvpb.LeaseGrantRequest{Ttl: -5}); return err }, false},
		{"grant 2^31+1 s", func() error { _, err := svc.Grant(ctx, &kvpb.LeaseGrantRequest{Ttl: 1<<31 + 1}); return err }, false},
		{"revoke", func() error { _, err := svc.Revoke(ctx, &kvpb.LeaseRevokeRequest{Id: 3}); return err }, true},
		{"revoke id 0", func() error { _, err := svc.Revoke(ctx, &kvpb.LeaseRevokeRequest{}); return err }, false},
		{"keepalive id -1", func() error { _, err := svc.keepAlive(ctx, &kvpb.LeaseKeepAliveRequest{Id: -1}); return err }, false},
		{"ttl id 0", func() error { _, err := svc.TimeToLive(ctx, &kvpb.LeaseTimeToLiveRequest{}); return err }, false},
		{"list", func() error { _, err := svc.List(ctx, &kvpb.LeaseListRequest{}); return err }, true},
		{"revoke local id 0", func() error { _, err := svc.LeaseRevokeLocal(ctx, &kvpb.LeaseRevokeLocalRequest{}); return err }, false},
		{"lease keys", func() error { _, err := svc.LeaseKeys(ctx, &kvpb.LeaseKeysRequest{Id: 2}); return err }, true},
		{"put with a lease", func() error {
			_, err := svc.Put(ctx, &kvpb.PutRequest{Key: []byte("k"), Lease: 9})
			return err
		}, true},
		{"put with a negative lease", func() error {
			_, err := svc.Put(ctx, &kvpb.PutRequest{Key: []byte("k"), Lease: -9})
			return err
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb.reset()
			err := tt.call()
			if tt.valid {
				if err != nil || fb.numCalls() != 1 {
					t.Fatalf("err %v, %d backend calls; want it served", err, fb.numCalls())
				}
				return
			}
			wantStatus(t, err, codes.InvalidArgument, rpctypes.ReasonInvalid)
			if fb.numCalls() != 0 {
				t.Fatal("an invalid request reached the backend")
			}
		})
	}
}

// TestLease_KeepAliveStreamAnswersEachRequestAndEndsOnNotFound: each
// request is one renewal and one answer; the lease's end closes the
// stream with LEASE_NOT_FOUND.
func TestLease_KeepAliveStreamAnswersEachRequestAndEndsOnNotFound(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := kvpb.NewLeaseClient(conn).KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(&kvpb.LeaseKeepAliveRequest{Id: 5}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.Id != 5 || resp.Ttl != 10 {
			t.Fatalf("answer %d: %v, %v", i, resp, err)
		}
		if c := fb.lastCall(t); c.method != "LeaseKeepAlive" || !c.hasDeadline {
			t.Fatalf("backend call %+v; want a LeaseKeepAlive with the default deadline", c)
		}
	}
	if n := fb.numCalls(); n != 3 {
		t.Fatalf("%d backend calls for 3 keepalives", n)
	}
	fb.setHook(errHook(replication.ErrLeaseNotFound))
	if err := stream.Send(&kvpb.LeaseKeepAliveRequest{Id: 5}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.NotFound, rpctypes.ReasonLeaseNotFound)
}

func TestLease_KeepAliveStreamEndsCleanlyWhenTheClientCloses(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := kvpb.NewLeaseClient(conn).KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend: %v; want io.EOF", err)
	}
	if fb.numCalls() != 0 {
		t.Fatal("a stream without requests reached the backend")
	}
}

func TestLease_AnyAuthenticatedUser(t *testing.T) {
	fx := newAuthFixture(t)
	svc, _, _ := newTestService(t, testLimits())
	svc.SetAuth(&memAuth{st: fx.enabled}, fuzzTokenTTL)
	alice := withHTTPCreds(context.Background(), "Bearer "+fx.aliceToken, nil)
	if _, err := svc.Grant(alice, &kvpb.LeaseGrantRequest{Ttl: 5}); err != nil {
		t.Fatalf("alice grants: %v", err)
	}
	if _, err := svc.List(alice, &kvpb.LeaseListRequest{}); err != nil {
		t.Fatalf("alice lists: %v", err)
	}
	_, err := svc.Grant(context.Background(), &kvpb.LeaseGrantRequest{Ttl: 5})
	wantStatus(t, err, codes.Unauthenticated, rpctypes.ReasonUnauthenticated)
}

func TestHTTPLease_Routes(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path, body string
		hook       fakeHook
		code       int
		want       map[string]any // fields of the JSON answer
		backend    string         // the backend method called
		check      func(t *testing.T, req any)
	}{
		{name: "grant", method: "POST", path: "/v1/lease/grant", body: `{"ttl": 10}`, code: 200,
			want: map[string]any{"id": "7587862", "ttl": "10"}, backend: "LeaseGrant"},
		{name: "grant with the ttl as a string", method: "POST", path: "/v1/lease/grant", body: `{"ttl": "30"}`, code: 200,
			want: map[string]any{"ttl": "30"}, backend: "LeaseGrant"},
		{name: "grant 0", method: "POST", path: "/v1/lease/grant", body: `{"ttl": 0}`, code: 400,
			want: map[string]any{"reason": "INVALID_ARGUMENT"}},
		{name: "keepalive", method: "POST", path: "/v1/lease/keepalive", body: `{"id": "42"}`, code: 200,
			want: map[string]any{"id": "42", "ttl": "10"}, backend: "LeaseKeepAlive"},
		{name: "keepalive of an ended lease", method: "POST", path: "/v1/lease/keepalive", body: `{"id": 42}`,
			hook: errHook(replication.ErrLeaseNotFound), code: 404, want: map[string]any{"reason": "LEASE_NOT_FOUND", "code": "NotFound"}},
		{name: "revoke", method: "POST", path: "/v1/lease/revoke", body: `{"id": 42}`, code: 200,
			want: map[string]any{"keys_deleted": "2"}, backend: "LeaseRevoke"},
		{name: "revoke without a cluster-wide feature", method: "POST", path: "/v1/lease/revoke", body: `{"id": 42}`,
			hook: errHook(replication.ErrFeatureUnavailable), code: 412, want: map[string]any{"reason": "FEATURE_UNAVAILABLE"}},
		{name: "list", method: "GET", path: "/v1/lease/list", code: 200, backend: "LeaseList"},
		{name: "ttl with keys", method: "GET", path: "/v1/lease/ttl?id=42&keys=true", code: 200,
			want: map[string]any{"id": "42", "granted_ttl": "10", "ttl": "9"}, backend: "LeaseTimeToLive",
			check: func(t *testing.T, req any) {
				if r := req.(*kvpb.LeaseTimeToLiveRequest); r.Id != 42 || !r.Keys {
					t.Errorf("backend got %v", r)
				}
			}},
		{name: "ttl without an id", method: "GET", path: "/v1/lease/ttl", code: 400, want: map[string]any{"reason": "INVALID_ARGUMENT"}},
		{name: "ttl of a bad id", method: "GET", path: "/v1/lease/ttl?id=abc", code: 400, want: map[string]any{"reason": "INVALID_ARGUMENT"}},
		{name: "put with a lease", method: "PUT", path: "/v1/kv/k?lease=42", body: "v", code: 200, backend: "Put",
			check: func(t *testing.T, req any) {
				if r := req.(*kvpb.PutRequest); r.Lease != 42 || string(r.Value) != "v" {
					t.Errorf("backend got %v", r)
				}
			}},
		{name: "put with a bad lease", method: "PUT", path: "/v1/kv/k?lease=x", body: "v", code: 400, want: map[string]any{"reason": "INVALID_ARGUMENT"}},
		{name: "put with an ended lease", method: "PUT", path: "/v1/kv/k?lease=42", body: "v",
			hook: errHook(replication.ErrLeaseNotFound), code: 404, want: map[string]any{"reason": "LEASE_NOT_FOUND"}},
		{name: "grant takes no GET", method: "GET", path: "/v1/lease/grant", code: 405, want: map[string]any{"reason": "METHOD_NOT_ALLOWED"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			env.fb.setHook(tt.hook)
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			r := env.do(tt.method, tt.path, body)
			if r.code != tt.code {
				t.Fatalf("%v; want %d", r, tt.code)
			}
			var got map[string]any
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("%v: not JSON: %v", r, err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v; want %v (body %s)", k, got[k], v, r.body)
				}
			}
			if tt.backend != "" {
				c := env.fb.lastCall(t)
				if c.method != tt.backend {
					t.Fatalf("backend method %s; want %s", c.method, tt.backend)
				}
				if tt.check != nil {
					tt.check(t, c.req)
				}
			}
		})
	}
}

func TestLeaseAndWatchErrors_HTTPStatus(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{replication.ErrCompacted, http.StatusGone},
		{replication.ErrLeaseNotFound, http.StatusNotFound},
		{replication.ErrFeatureUnavailable, http.StatusPreconditionFailed},
	}
	for _, tt := range tests {
		if got := httpStatus(toStatus(tt.err, opRead)); got != tt.code {
			t.Errorf("%v: HTTP %d; want %d", tt.err, got, tt.code)
		}
	}
}
