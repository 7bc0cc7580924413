package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
)

// newTestClient returns a client with tiny backoff so retry tests are fast.
func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = harness.TestLogger(t, slog.LevelDebug)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.backoffBase, c.backoffMax = time.Millisecond, 4*time.Millisecond
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, c *Client, key, value string) {
	t.Helper()
	if _, err := c.Put(testCtx(t), []byte(key), []byte(value)); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// call runs the method named m with fixed arguments, for table tests.
func call(ctx context.Context, c *Client, m string) error {
	var err error
	switch m {
	case clienttest.MethodPut:
		_, err = c.Put(ctx, []byte("k"), []byte("v"))
	case clienttest.MethodGet:
		_, err = c.Get(ctx, []byte("k"))
	case clienttest.MethodDelete:
		_, err = c.Delete(ctx, []byte("k"))
	case clienttest.MethodCAS:
		_, err = c.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte("k"), ExpectedValue: []byte("v"), NewValue: []byte("w")})
	case clienttest.MethodScan:
		_, err = c.Scan(ctx, &kvpb.ScanRequest{})
	case clienttest.MethodMembers:
		_, err = c.Members(ctx)
	case clienttest.MethodAddMember:
		_, err = c.AddMember(ctx, "n9", "127.0.0.1:9", false)
	case clienttest.MethodRemoveMember:
		_, err = c.RemoveMember(ctx, "n2")
	case clienttest.MethodRanges:
		_, err = c.Ranges(ctx)
	case clienttest.MethodSplitRange:
		_, err = c.SplitRange(ctx, []byte("k"))
	default:
		return fmt.Errorf("no such method %q", m)
	}
	return err
}

func TestNew_ValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no endpoints", Config{}, "no endpoints"},
		{"only blanks", Config{Endpoints: []string{" ", ""}}, "no endpoints"},
		{"missing port", Config{Endpoints: []string{"127.0.0.1"}}, "want host:port"},
		{"missing host", Config{Endpoints: []string{":7010"}}, "missing host"},
		{"bad port", Config{Endpoints: []string{"h:0"}}, "bad port"},
		{"port not a number", Config{Endpoints: []string{"h:http"}}, "bad port"},
		{"negative attempts", Config{Endpoints: []string{"h:1"}, MaxAttempts: -1}, "negative"},
		{"ok", Config{Endpoints: []string{"h:1", " h:2 ", "h:1", "[::1]:3"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer c.Close()
				if got, want := c.Endpoints(), []string{"h:1", "h:2", "[::1]:3"}; !slices.Equal(got, want) {
					t.Fatalf("Endpoints() = %v, want %v", got, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestClient_FailsOverWhenEndpointRefusesConnections(t *testing.T) {
	for _, m := range []string{clienttest.MethodPut, clienttest.MethodGet, clienttest.MethodDelete,
		clienttest.MethodCAS, clienttest.MethodScan, clienttest.MethodMembers, clienttest.MethodAddMember} {
		t.Run(m, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.Put([]byte("k"), []byte("v"))
			c := newTestClient(t, Config{Endpoints: []string{clienttest.ClosedAddr(t), srv.Addr}})
			if err := call(testCtx(t), c, m); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			if got := srv.Calls(m); got != 1 {
				t.Fatalf("%s reached the live server %d times, want 1", m, got)
			}
		})
	}
}

func TestClient_AllEndpointsRefusingIsUnavailableButNotIndeterminate(t *testing.T) {
	c := newTestClient(t, Config{Endpoints: []string{clienttest.ClosedAddr(t), clienttest.ClosedAddr(t)}, MaxAttempts: 3})
	_, err := c.CompareAndSwap(testCtx(t), &kvpb.CompareAndSwapRequest{Key: []byte("k"), NewValue: []byte("v"), ExpectMissing: true})
	if !IsUnavailable(err) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if IsIndeterminate(err) {
		t.Fatalf("err = %v: a CAS that never reached a server must not be indeterminate", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("err = %#v, want *Error after 3 attempts", err)
	}
}

func TestClient_RetriesNotLeaderThenSucceeds(t *testing.T) {
	for _, m := range []string{clienttest.MethodPut, clienttest.MethodGet, clienttest.MethodDelete,
		clienttest.MethodCAS, clienttest.MethodScan, clienttest.MethodMembers,
		clienttest.MethodAddMember, clienttest.MethodRemoveMember, clienttest.MethodRanges,
		clienttest.MethodSplitRange} {
		t.Run(m, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.Put([]byte("k"), []byte("v"))
			srv.Store.SetNodes(&kvpb.NodeInfo{Id: "n2"})
			srv.Store.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n2"}, Leader: "n2"})
			srv.Fail(m, 2, clienttest.NotLeader(""))
			c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
			if err := call(testCtx(t), c, m); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			if got := srv.Calls(m); got != 3 {
				t.Fatalf("%s called %d times, want 3", m, got)
			}
		})
	}
}

func TestClient_RetryPolicy(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "transport is closing")
	deadline := status.Error(codes.DeadlineExceeded, "deadline exceeded")
	wrongRange := rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonWrongRange, "wrong range", nil)
	invalid := rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, "bad key", nil)
	stale := rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonStaleReplica, "stale", nil)
	internal := rpctypes.Error(codes.Internal, rpctypes.ReasonInternal, "boom", nil)

	tests := []struct {
		name          string
		method        string
		fail          error
		failures      int
		wantCalls     int
		wantErr       bool
		indeterminate bool
		check         func(error) bool
	}{
		{"cas not retried on indeterminate", clienttest.MethodCAS, clienttest.Indeterminate(), 1, 1, true, true, IsUnavailable},
		{"cas not retried on a broken connection", clienttest.MethodCAS, unavailable, 1, 1, true, true, IsUnavailable},
		{"cas not retried when a server reports connection refused", clienttest.MethodCAS, status.Error(codes.Unavailable, "forwarding: dial tcp: connect: connection refused"), 1, 1, true, true, IsUnavailable},
		{"cas not retried on deadline", clienttest.MethodCAS, deadline, 1, 1, true, true, IsUnavailable},
		{"cas not retried on internal", clienttest.MethodCAS, internal, 1, 1, true, true, nil},
		{"cas retried on wrong range", clienttest.MethodCAS, wrongRange, 1, 2, false, false, nil},
		{"cas retried on no leader", clienttest.MethodCAS, rpctypes.Error(codes.Unavailable, rpctypes.ReasonNoLeader, "election", nil), 2, 3, false, false, nil},
		{"cas retried on shutting down", clienttest.MethodCAS, rpctypes.Error(codes.Unavailable, rpctypes.ReasonShuttingDown, "bye", nil), 1, 2, false, false, nil},
		{"put not retried on indeterminate", clienttest.MethodPut, clienttest.Indeterminate(), 1, 1, true, true, nil},
		{"put not retried on deadline", clienttest.MethodPut, deadline, 1, 1, true, true, IsUnavailable},
		{"put retried on a broken connection", clienttest.MethodPut, unavailable, 2, 3, false, false, nil},
		{"put broken on every attempt is indeterminate", clienttest.MethodPut, unavailable, 10, 6, true, true, IsUnavailable},
		{"put not retried on invalid", clienttest.MethodPut, invalid, 1, 1, true, false, IsInvalid},
		{"delete not retried on indeterminate", clienttest.MethodDelete, clienttest.Indeterminate(), 1, 1, true, true, nil},
		{"delete retried on wrong range", clienttest.MethodDelete, wrongRange, 1, 2, false, false, nil},
		{"get retried on stale replica", clienttest.MethodGet, stale, 2, 3, false, false, nil},
		{"get retried on a broken connection", clienttest.MethodGet, unavailable, 1, 2, false, false, nil},
		{"get not retried on deadline", clienttest.MethodGet, deadline, 1, 1, true, false, IsUnavailable},
		{"get gives up after max attempts", clienttest.MethodGet, clienttest.NotLeader(""), 10, 6, true, false, IsUnavailable},
		{"scan not retried on invalid", clienttest.MethodScan, invalid, 1, 1, true, false, IsInvalid},
		{"add member not retried on indeterminate", clienttest.MethodAddMember, clienttest.Indeterminate(), 1, 1, true, true, nil},
		{"remove member not retried on a broken connection", clienttest.MethodRemoveMember, unavailable, 1, 1, true, true, nil},
		{"split not retried on indeterminate", clienttest.MethodSplitRange, clienttest.Indeterminate(), 1, 1, true, true, nil},
		{"split retried on not leader", clienttest.MethodSplitRange, clienttest.NotLeader(""), 1, 2, false, false, nil},
		{"ranges retried on a broken connection", clienttest.MethodRanges, unavailable, 1, 2, false, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.Put([]byte("k"), []byte("v"))
			srv.Store.SetNodes(&kvpb.NodeInfo{Id: "n2"})
			srv.Store.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n2"}, Leader: "n2"})
			srv.Fail(tt.method, tt.failures, tt.fail)
			c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
			err := call(testCtx(t), c, tt.method)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if got := srv.Calls(tt.method); got != tt.wantCalls {
				t.Fatalf("called %d times, want %d (err %v)", got, tt.wantCalls, err)
			}
			if got := IsIndeterminate(err); got != tt.indeterminate {
				t.Fatalf("IsIndeterminate(%v) = %v, want %v", err, got, tt.indeterminate)
			}
			if tt.check != nil && !tt.check(err) {
				t.Fatalf("err = %v does not satisfy the expected predicate", err)
			}
		})
	}
}

func TestClient_DisableRetriesMakesOneAttempt(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Fail(clienttest.MethodGet, 5, clienttest.NotLeader(""))
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}, DisableRetries: true})
	if _, err := c.Get(testCtx(t), []byte("k")); !IsUnavailable(err) {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if got := srv.Calls(clienttest.MethodGet); got != 1 {
		t.Fatalf("Get called %d times, want 1", got)
	}
}

func TestClient_FollowsLeaderHint(t *testing.T) {
	st := clienttest.NewStore()
	leader := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n3"))
	a := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	b := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	a.Fail(clienttest.MethodCAS, 1, clienttest.NotLeader(leader.Addr))

	// The leader is not among the configured endpoints: the hint must add it.
	c := newTestClient(t, Config{Endpoints: []string{a.Addr, b.Addr}})
	resp, err := c.CompareAndSwap(testCtx(t), &kvpb.CompareAndSwapRequest{Key: []byte("k"), NewValue: []byte("v"), ExpectMissing: true})
	if err != nil {
		t.Fatalf("CompareAndSwap: %v", err)
	}
	if got := resp.GetHeader().GetServedBy(); got != "n3" {
		t.Fatalf("served by %q, want the hinted leader n3", got)
	}
	if b.Calls(clienttest.MethodCAS) != 0 {
		t.Fatalf("the next endpoint was tried although the error named the leader")
	}
	if got := c.Endpoints(); !slices.Contains(got, leader.Addr) {
		t.Fatalf("Endpoints() = %v, want the leader %s added", got, leader.Addr)
	}
	// The leader is now sticky.
	mustPut(t, c, "k2", "v")
	if got := leader.Calls(clienttest.MethodPut); got != 1 {
		t.Fatalf("leader got %d puts, want 1", got)
	}
}

func TestClient_IgnoresUnusableLeaderHint(t *testing.T) {
	st := clienttest.NewStore()
	a := clienttest.Start(t, clienttest.WithStore(st))
	b := clienttest.Start(t, clienttest.WithStore(st))
	a.Fail(clienttest.MethodPut, 1, clienttest.NotLeader("0.0.0.0:7010"))
	c := newTestClient(t, Config{Endpoints: []string{a.Addr, b.Addr}})
	mustPut(t, c, "k", "v")
	if got := b.Calls(clienttest.MethodPut); got != 1 {
		t.Fatalf("b got %d puts, want 1", got)
	}
	if got := c.Endpoints(); len(got) != 2 {
		t.Fatalf("Endpoints() = %v, want the wildcard hint ignored", got)
	}
}

func TestClient_ScanAllFollowsPagesWithTotalLimit(t *testing.T) {
	srv := clienttest.Start(t, clienttest.WithPageSize(3))
	for i := range 10 {
		srv.Store.Put(fmt.Appendf(nil, "a%02d", i), fmt.Appendf(nil, "v%d", i))
	}
	for i := range 4 {
		srv.Store.Put(fmt.Appendf(nil, "b%02d", i), []byte("x"))
	}
	srv.Store.Put([]byte("c"), []byte("x"))
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})

	tests := []struct {
		name      string
		req       *kvpb.ScanRequest
		wantFirst string
		wantLast  string
		wantN     int
	}{
		{"everything", &kvpb.ScanRequest{}, "a00", "c", 15},
		{"nil request", nil, "a00", "c", 15},
		{"total limit across pages", &kvpb.ScanRequest{Limit: 7}, "a00", "a06", 7},
		{"limit smaller than a page", &kvpb.ScanRequest{Limit: 2}, "a00", "a01", 2},
		{"limit on a page boundary", &kvpb.ScanRequest{Limit: 6}, "a00", "a05", 6},
		{"limit above the key count", &kvpb.ScanRequest{Limit: 100}, "a00", "c", 15},
		{"prefix across pages", &kvpb.ScanRequest{Prefix: []byte("b")}, "b00", "b03", 4},
		{"prefix with limit", &kvpb.ScanRequest{Prefix: []byte("a"), Limit: 5}, "a00", "a04", 5},
		{"start and end", &kvpb.ScanRequest{Start: []byte("a05"), End: []byte("b01")}, "a05", "b00", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var keys []string
			pages := 0
			err := c.ScanAll(testCtx(t), tt.req, func(kv *kvpb.KeyValue) error {
				keys = append(keys, string(kv.GetKey()))
				return nil
			}, WithPageHeader(func(*kvpb.ReadHeader) { pages++ }))
			if err != nil {
				t.Fatalf("ScanAll: %v", err)
			}
			if len(keys) != tt.wantN || keys[0] != tt.wantFirst || keys[len(keys)-1] != tt.wantLast {
				t.Fatalf("keys = %v, want %d keys from %s to %s", keys, tt.wantN, tt.wantFirst, tt.wantLast)
			}
			if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
				t.Fatalf("keys = %v, want sorted and distinct", keys)
			}
			if want := (tt.wantN + 2) / 3; tt.wantN > 3 && pages < want {
				t.Fatalf("%d pages, want at least %d", pages, want)
			}
		})
	}
	req := &kvpb.ScanRequest{Prefix: []byte("a"), Limit: 5}
	if err := c.ScanAll(testCtx(t), req, func(*kvpb.KeyValue) error { return nil }); err != nil {
		t.Fatalf("ScanAll: %v", err)
	}
	if req.GetLimit() != 5 || string(req.GetPrefix()) != "a" || req.GetStart() != nil || req.GetRead() != nil {
		t.Fatalf("ScanAll modified the caller's request: %v", req)
	}
}

func TestClient_ScanAllStopsOnCallbackError(t *testing.T) {
	srv := clienttest.Start(t, clienttest.WithPageSize(2))
	for i := range 5 {
		srv.Store.Put(fmt.Appendf(nil, "k%d", i), nil)
	}
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	stop := errors.New("stop")
	n := 0
	err := c.ScanAll(testCtx(t), &kvpb.ScanRequest{}, func(*kvpb.KeyValue) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("err = %v after %d keys, want the callback's error after 3", err, n)
	}
}

func TestClient_ReadOptionsReachTheServer(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Store.Put([]byte("k"), []byte("v"))
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	var hdr *kvpb.ReadHeader
	resp, err := c.Get(testCtx(t), []byte("k"), WithConsistency(kvpb.Consistency_CONSISTENCY_STALE),
		WithMaxStaleness(time.Second), WithSessionToken("s1"), WithPageHeader(func(h *kvpb.ReadHeader) { hdr = h }))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got := resp.GetHeader().GetConsistency(); got != kvpb.Consistency_CONSISTENCY_STALE {
		t.Fatalf("served consistency %v, want STALE", got)
	}
	if hdr != resp.GetHeader() {
		t.Fatalf("page header callback not called with the response header")
	}
}

func TestClient_StatusAsksTheGivenEndpoint(t *testing.T) {
	a := clienttest.Start(t, clienttest.WithID("n1"))
	other := clienttest.Start(t, clienttest.WithID("n7"))
	c := newTestClient(t, Config{Endpoints: []string{a.Addr}})
	resp, err := c.Status(testCtx(t), other.Addr)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if got := resp.GetNode().GetId(); got != "n7" {
		t.Fatalf("Status answered by %q, want n7", got)
	}
	if a.Calls(clienttest.MethodStatus) != 0 {
		t.Fatalf("Status failed over to a configured endpoint")
	}
	if _, err := c.Status(testCtx(t), clienttest.ClosedAddr(t)); !IsUnavailable(err) {
		t.Fatalf("Status of a closed port: err = %v, want unavailable", err)
	}
	if _, err := c.Status(testCtx(t), "nonsense"); err == nil {
		t.Fatalf("Status of a malformed endpoint succeeded")
	}
}

func TestClient_ErrorHelpersSeeThroughWrapping(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Store.Put([]byte("k"), []byte("v"))
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})

	_, err := c.Get(testCtx(t), []byte("missing"))
	wrapped := fmt.Errorf("loading config: %w", err)
	if !IsNotFound(wrapped) || status.Code(wrapped) != codes.NotFound || rpctypes.ReasonOf(wrapped) != rpctypes.ReasonKeyNotFound {
		t.Fatalf("wrapped not-found error %v not recognised", wrapped)
	}
	if IsUnavailable(wrapped) || IsIndeterminate(wrapped) || IsCompareFailed(wrapped) || IsInvalid(wrapped) {
		t.Fatalf("not-found error %v matched another class", wrapped)
	}
	if want := "get: key not found [KEY_NOT_FOUND]"; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("message %q, want prefix %q", err.Error(), want)
	}

	_, err = c.CompareAndSwap(testCtx(t), &kvpb.CompareAndSwapRequest{Key: []byte("k"), ExpectedValue: []byte("other")})
	if !IsCompareFailed(fmt.Errorf("x: %w", err)) || IsIndeterminate(err) {
		t.Fatalf("compare failure %v not recognised", err)
	}
}

func TestClient_ContextEndsRetries(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, context.Canceled) || IsIndeterminate(err) {
		t.Fatalf("err = %v, want a determinate context.Canceled", err)
	}
	if got := srv.Calls(clienttest.MethodPut); got != 0 {
		t.Fatalf("a cancelled Put reached the server %d times", got)
	}

	// A deadline shorter than the next backoff ends the retries at once.
	c.backoffBase, c.backoffMax = time.Hour, time.Hour
	srv.Fail(clienttest.MethodGet, 10, clienttest.NotLeader(""))
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Get(ctx, []byte("k"))
	if !errors.Is(err, context.DeadlineExceeded) || !IsUnavailable(err) || rpctypes.ReasonOf(err) != rpctypes.ReasonNotLeader {
		t.Fatalf("err = %v, want NOT_LEADER cut short by the deadline", err)
	}
	if got := srv.Calls(clienttest.MethodGet); got != 1 {
		t.Fatalf("Get called %d times, want 1", got)
	}
}

func TestClient_ClosedClientFails(t *testing.T) {
	srv := clienttest.Start(t)
	c, err := New(Config{Endpoints: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.Get(testCtx(t), []byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestClient_ConcurrentUseFailsOverTogether(t *testing.T) {
	st := clienttest.NewStore()
	a := clienttest.Start(t, clienttest.WithStore(st))
	b := clienttest.Start(t, clienttest.WithStore(st))
	a.Fail(clienttest.MethodPut, 1000, clienttest.NotLeader(b.Addr))
	c := newTestClient(t, Config{Endpoints: []string{a.Addr, b.Addr}})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			if _, err := c.Put(testCtx(t), fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Put: %v", err)
	}
	if got := st.Len(); got != 64 {
		t.Fatalf("%d keys stored, want 64", got)
	}
}

func TestRetryDelay_GrowsWithJitterAndCap(t *testing.T) {
	for attempt := 1; attempt <= 70; attempt++ {
		full := min(BackoffBase<<min(attempt-1, 20), BackoffMax)
		for range 20 {
			d := retryDelay(BackoffBase, BackoffMax, attempt)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a", "b"},
		{"ab", "ac"},
		{"a\xff", "b"},
		{"\xff\xff", ""},
	}
	for _, tt := range tests {
		if got := string(prefixEnd([]byte(tt.in))); got != tt.want {
			t.Errorf("prefixEnd(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseConsistency(t *testing.T) {
	tests := []struct {
		in      string
		want    kvpb.Consistency
		wantErr bool
	}{
		{"", kvpb.Consistency_CONSISTENCY_LINEARIZABLE, false},
		{"linearizable", kvpb.Consistency_CONSISTENCY_LINEARIZABLE, false},
		{"LINEARIZABLE", kvpb.Consistency_CONSISTENCY_LINEARIZABLE, false},
		{"bounded", kvpb.Consistency_CONSISTENCY_BOUNDED, false},
		{"Session", kvpb.Consistency_CONSISTENCY_SESSION, false},
		{"stale", kvpb.Consistency_CONSISTENCY_STALE, false},
		{"strong", 0, true},
		{"serializable", 0, true},
		{"CONSISTENCY_STALE", 0, true},
		{"stale-ish", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseConsistency(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseConsistency(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ParseConsistency(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if !tt.wantErr {
				if back, _ := ParseConsistency(ConsistencyName(got)); back != got {
					t.Fatalf("ConsistencyName(%v) = %q does not parse back", got, ConsistencyName(got))
				}
			}
		})
	}
	if got := ConsistencyName(kvpb.Consistency_CONSISTENCY_UNSPECIFIED); got != "linearizable" {
		t.Fatalf("ConsistencyName(UNSPECIFIED) = %q, want linearizable", got)
	}
}
