package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestServiceValidation checks every input rule of the Service methods:
// a refused request gets InvalidArgument with INVALID_ARGUMENT or
// TOO_LARGE and never reaches the backend; an accepted one (at the limit)
// does.
func TestServiceValidation(t *testing.T) {
	lim := testLimits() // keys ≤ 8 bytes, values ≤ 16, scan pages ≤ 100
	key := []byte("k")
	maxKey := []byte(strings.Repeat("k", lim.MaxKeyBytes))
	bigKey := []byte(strings.Repeat("k", lim.MaxKeyBytes+1))
	maxVal := []byte(strings.Repeat("v", lim.MaxValueBytes))
	bigVal := []byte(strings.Repeat("v", lim.MaxValueBytes+1))
	bounded := func(d *durationpb.Duration) *kvpb.ReadOptions {
		return &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, MaxStaleness: d}
	}
	level := func(c kvpb.Consistency) *kvpb.ReadOptions { return &kvpb.ReadOptions{Consistency: c} }
	bg := context.Background()

	type call func(*Service) error
	put := func(r *kvpb.PutRequest) call {
		return func(s *Service) error { _, err := s.Put(bg, r); return err }
	}
	get := func(r *kvpb.GetRequest) call {
		return func(s *Service) error { _, err := s.Get(bg, r); return err }
	}
	del := func(r *kvpb.DeleteRequest) call {
		return func(s *Service) error { _, err := s.Delete(bg, r); return err }
	}
	cas := func(r *kvpb.CompareAndSwapRequest) call {
		return func(s *Service) error { _, err := s.CompareAndSwap(bg, r); return err }
	}
	scan := func(r *kvpb.ScanRequest) call {
		return func(s *Service) error { _, err := s.Scan(bg, r); return err }
	}
	addMember := func(r *kvpb.AddMemberRequest) call {
		return func(s *Service) error { _, err := s.AddMember(bg, r); return err }
	}
	removeMember := func(r *kvpb.RemoveMemberRequest) call {
		return func(s *Service) error { _, err := s.RemoveMember(bg, r); return err }
	}

	const ok = rpctypes.Reason("") // accepted: reaches the backend
	tests := []struct {
		name   string
		call   call
		reason rpctypes.Reason // ok, ReasonInvalid or ReasonTooLarge
	}{
		// Put
		{"put/empty key", put(&kvpb.PutRequest{Value: []byte("v")}), rpctypes.ReasonInvalid},
		{"put/nil request fields", put(&kvpb.PutRequest{}), rpctypes.ReasonInvalid},
		{"put/key at limit", put(&kvpb.PutRequest{Key: maxKey, Value: []byte("v")}), ok},
		{"put/key over limit", put(&kvpb.PutRequest{Key: bigKey, Value: []byte("v")}), rpctypes.ReasonTooLarge},
		{"put/value at limit", put(&kvpb.PutRequest{Key: key, Value: maxVal}), ok},
		{"put/value over limit", put(&kvpb.PutRequest{Key: key, Value: bigVal}), rpctypes.ReasonTooLarge},
		{"put/empty value", put(&kvpb.PutRequest{Key: key}), ok},

		// Get
		{"get/empty key", get(&kvpb.GetRequest{}), rpctypes.ReasonInvalid},
		{"get/key over limit", get(&kvpb.GetRequest{Key: bigKey}), rpctypes.ReasonTooLarge},
		{"get/no read options", get(&kvpb.GetRequest{Key: key}), ok},
		{"get/unspecified", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency_CONSISTENCY_UNSPECIFIED)}), ok},
		{"get/linearizable", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency_CONSISTENCY_LINEARIZABLE)}), ok},
		{"get/stale", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency_CONSISTENCY_STALE)}), ok},
		{"get/session", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency_CONSISTENCY_SESSION)}), ok},
		{"get/unknown consistency 5", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency(5))}), rpctypes.ReasonInvalid},
		{"get/unknown consistency -1", get(&kvpb.GetRequest{Key: key, Read: level(kvpb.Consistency(-1))}), rpctypes.ReasonInvalid},
		{"get/bounded without max_staleness", get(&kvpb.GetRequest{Key: key, Read: bounded(nil)}), rpctypes.ReasonInvalid},
		{"get/bounded zero max_staleness", get(&kvpb.GetRequest{Key: key, Read: bounded(durationpb.New(0))}), rpctypes.ReasonInvalid},
		{"get/bounded negative max_staleness", get(&kvpb.GetRequest{Key: key, Read: bounded(durationpb.New(-time.Second))}), rpctypes.ReasonInvalid},
		{"get/bounded 250ms", get(&kvpb.GetRequest{Key: key, Read: bounded(durationpb.New(250 * time.Millisecond))}), ok},

		// Delete
		{"delete/empty key", del(&kvpb.DeleteRequest{}), rpctypes.ReasonInvalid},
		{"delete/key over limit", del(&kvpb.DeleteRequest{Key: bigKey}), rpctypes.ReasonTooLarge},
		{"delete/ok", del(&kvpb.DeleteRequest{Key: key}), ok},

		// CompareAndSwap
		{"cas/empty key", cas(&kvpb.CompareAndSwapRequest{ExpectMissing: true, NewValue: []byte("v")}), rpctypes.ReasonInvalid},
		{"cas/key over limit", cas(&kvpb.CompareAndSwapRequest{Key: bigKey, ExpectMissing: true}), rpctypes.ReasonTooLarge},
		{"cas/expect_missing and expected_value", cas(&kvpb.CompareAndSwapRequest{Key: key, ExpectMissing: true, ExpectedValue: []byte("old"), NewValue: []byte("v")}), rpctypes.ReasonInvalid},
		{"cas/expected value over limit", cas(&kvpb.CompareAndSwapRequest{Key: key, ExpectedValue: bigVal, NewValue: []byte("v")}), rpctypes.ReasonTooLarge},
		{"cas/new value over limit", cas(&kvpb.CompareAndSwapRequest{Key: key, ExpectedValue: []byte("old"), NewValue: bigVal}), rpctypes.ReasonTooLarge},
		{"cas/expect_missing", cas(&kvpb.CompareAndSwapRequest{Key: key, ExpectMissing: true, NewValue: maxVal}), ok},
		{"cas/expected value", cas(&kvpb.CompareAndSwapRequest{Key: key, ExpectedValue: maxVal, NewValue: maxVal}), ok},

		// Scan
		{"scan/everything", scan(&kvpb.ScanRequest{}), ok},
		{"scan/prefix", scan(&kvpb.ScanRequest{Prefix: []byte("p/")}), ok},
		{"scan/start only", scan(&kvpb.ScanRequest{Start: []byte("a")}), ok},
		{"scan/end only", scan(&kvpb.ScanRequest{End: []byte("z")}), ok},
		{"scan/start before end", scan(&kvpb.ScanRequest{Start: []byte("a"), End: []byte("b")}), ok},
		{"scan/prefix and start", scan(&kvpb.ScanRequest{Prefix: []byte("p/"), Start: []byte("a")}), rpctypes.ReasonInvalid},
		{"scan/prefix and end", scan(&kvpb.ScanRequest{Prefix: []byte("p/"), End: []byte("z")}), rpctypes.ReasonInvalid},
		{"scan/start equals end", scan(&kvpb.ScanRequest{Start: []byte("b"), End: []byte("b")}), rpctypes.ReasonInvalid},
		{"scan/start after end", scan(&kvpb.ScanRequest{Start: []byte("c"), End: []byte("b")}), rpctypes.ReasonInvalid},
		{"scan/limit at max", scan(&kvpb.ScanRequest{Limit: lim.MaxScanLimit}), ok},
		{"scan/limit over max", scan(&kvpb.ScanRequest{Limit: lim.MaxScanLimit + 1}), rpctypes.ReasonInvalid},
		{"scan/start over key limit", scan(&kvpb.ScanRequest{Start: bigKey}), rpctypes.ReasonTooLarge},
		{"scan/prefix over key limit", scan(&kvpb.ScanRequest{Prefix: bigKey}), rpctypes.ReasonTooLarge},
		{"scan/unknown consistency", scan(&kvpb.ScanRequest{Read: level(kvpb.Consistency(42))}), rpctypes.ReasonInvalid},
		{"scan/bounded without max_staleness", scan(&kvpb.ScanRequest{Read: bounded(nil)}), rpctypes.ReasonInvalid},

		// Membership
		{"add member/ok", addMember(&kvpb.AddMemberRequest{Id: "n4", RaftAddr: "127.0.0.1:7042"}), ok},
		{"add member/ipv6", addMember(&kvpb.AddMemberRequest{Id: "n4", RaftAddr: "[::1]:7042"}), ok},
		{"add member/empty id", addMember(&kvpb.AddMemberRequest{RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/id with =", addMember(&kvpb.AddMemberRequest{Id: "n4=x", RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/id with comma", addMember(&kvpb.AddMemberRequest{Id: "n4,n5", RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/id with space", addMember(&kvpb.AddMemberRequest{Id: "n 4", RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/id with tab", addMember(&kvpb.AddMemberRequest{Id: "n\t4", RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/id with newline", addMember(&kvpb.AddMemberRequest{Id: "n4\n", RaftAddr: "127.0.0.1:7042"}), rpctypes.ReasonInvalid},
		{"add member/empty raft addr", addMember(&kvpb.AddMemberRequest{Id: "n4"}), rpctypes.ReasonInvalid},
		{"add member/raft addr without port", addMember(&kvpb.AddMemberRequest{Id: "n4", RaftAddr: "127.0.0.1"}), rpctypes.ReasonInvalid},
		{"add member/raft addr too many colons", addMember(&kvpb.AddMemberRequest{Id: "n4", RaftAddr: "::1:7042"}), rpctypes.ReasonInvalid},
		{"remove member/ok", removeMember(&kvpb.RemoveMemberRequest{Id: "n4"}), ok},
		{"remove member/empty id", removeMember(&kvpb.RemoveMemberRequest{}), rpctypes.ReasonInvalid},
		{"remove member/id with comma", removeMember(&kvpb.RemoveMemberRequest{Id: "a,b"}), rpctypes.ReasonInvalid},

		// Cluster and internal methods with input rules.
		{"split range/empty key", func(s *Service) error { _, err := s.SplitRange(bg, &kvpb.SplitRangeRequest{}); return err }, rpctypes.ReasonInvalid},
		{"split range/key over limit", func(s *Service) error {
			_, err := s.SplitRange(bg, &kvpb.SplitRangeRequest{Key: bigKey})
			return err
		}, rpctypes.ReasonTooLarge},
		{"split range/ok", func(s *Service) error { _, err := s.SplitRange(bg, &kvpb.SplitRangeRequest{Key: key}); return err }, ok},
		{"meta put/short value", func(s *Service) error {
			_, err := s.MetaPut(bg, &kvpb.MetaPutRequest{Key: key, Value: make([]byte, 15)})
			return err
		}, rpctypes.ReasonInvalid},
		{"meta put/no key", func(s *Service) error {
			_, err := s.MetaPut(bg, &kvpb.MetaPutRequest{Value: make([]byte, 16)})
			return err
		}, rpctypes.ReasonInvalid},
		{"meta put/ok", func(s *Service) error {
			_, err := s.MetaPut(bg, &kvpb.MetaPutRequest{Key: key, Value: make([]byte, 16)})
			return err
		}, ok},
		{"meta increment/empty key", func(s *Service) error {
			_, err := s.MetaIncrement(bg, &kvpb.MetaIncrementRequest{})
			return err
		}, rpctypes.ReasonInvalid},
		{"create replica/no range", func(s *Service) error {
			_, err := s.CreateReplica(bg, &kvpb.CreateReplicaRequest{})
			return err
		}, rpctypes.ReasonInvalid},
		{"create replica/ok", func(s *Service) error {
			_, err := s.CreateReplica(bg, &kvpb.CreateReplicaRequest{Range: &kvpb.RangeDescriptor{Id: 3}})
			return err
		}, ok},
		{"read index/too many ranges", func(s *Service) error {
			_, err := s.ReadIndex(bg, &kvpb.ReadIndexRequest{RangeIds: make([]uint64, 10001)})
			return err
		}, rpctypes.ReasonInvalid},
		{"read index/at max", func(s *Service) error {
			_, err := s.ReadIndex(bg, &kvpb.ReadIndexRequest{RangeIds: make([]uint64, 10000)})
			return err
		}, ok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, fb, _ := newTestService(t, lim)
			err := tc.call(svc)
			if tc.reason == ok {
				if err != nil {
					t.Fatalf("got %v; want success", err)
				}
				if n := fb.numCalls(); n != 1 {
					t.Fatalf("backend called %d times; want 1", n)
				}
				return
			}
			wantStatus(t, err, codes.InvalidArgument, tc.reason)
			if calls := fb.callList(); len(calls) != 0 {
				t.Fatalf("backend was called (%s) for a refused request", calls[0].method)
			}
		})
	}
}

// TestServicePassesRequestThrough checks that the backend gets the very
// request the caller sent and the caller gets the backend's response.
func TestServicePassesRequestThrough(t *testing.T) {
	svc, fb, _ := newTestService(t, testLimits())
	want := &kvpb.GetResponse{Header: &kvpb.ReadHeader{ServedBy: "n9", AppliedIndex: 5}, Kv: &kvpb.KeyValue{Key: []byte("k"), Value: []byte("v"), Revision: 3}}
	fb.setHook(func(context.Context, string, any) (any, error) { return want, nil })
	req := &kvpb.GetRequest{Key: []byte("k"), Read: &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE}}
	got, err := svc.Get(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("response %v; want the backend's %v", got, want)
	}
	if c := fb.lastCall(t); c.method != "Get" || c.req != req {
		t.Errorf("backend got %s %v; want Get %v", c.method, c.req, req)
	}
}

// TestServiceDeadline checks the deadline the backend sees: the default
// timeout when the caller has none, else the caller's minus a margin of
// a tenth of the time left, at most 100ms.
func TestServiceDeadline(t *testing.T) {
	tests := []struct {
		name       string
		callerTime time.Duration // 0: no caller deadline
		wantBefore time.Duration // backend deadline ≈ now + callerTime - margin
	}{
		{"no caller deadline", 0, testLimits().DefaultTimeout},
		{"caller 500ms: margin 50ms", 500 * time.Millisecond, 450 * time.Millisecond},
		{"caller 5s: margin capped at 100ms", 5 * time.Second, 5*time.Second - 100*time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, fb, _ := newTestService(t, testLimits())
			ctx := context.Background()
			start := time.Now()
			if tc.callerTime > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.callerTime)
				defer cancel()
			}
			if _, err := svc.Put(ctx, &kvpb.PutRequest{Key: []byte("k")}); err != nil {
				t.Fatal(err)
			}
			c := fb.lastCall(t)
			if !c.hasDeadline {
				t.Fatal("backend context has no deadline")
			}
			want := start.Add(tc.wantBefore)
			if d := c.deadline.Sub(want); d < -20*time.Millisecond || d > 20*time.Millisecond {
				t.Errorf("backend deadline is %v from the expected one", d)
			}
			if dl, ok := ctx.Deadline(); ok && !c.deadline.Before(dl) {
				t.Errorf("backend deadline %v is not before the caller's %v", c.deadline, dl)
			}
		})
	}
}

// TestServiceReadAnswersBeforeCallerDeadline: thanks to the margin, a read
// the backend cannot finish is reported DEADLINE_EXCEEDED while the caller
// is still waiting, and carries no value.
func TestServiceReadAnswersBeforeCallerDeadline(t *testing.T) {
	svc, fb, _ := newTestService(t, testLimits())
	old := &kvpb.GetResponse{Kv: &kvpb.KeyValue{Key: []byte("k"), Value: []byte("old")}}
	fb.setHook(blockHook(old, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := svc.Get(ctx, &kvpb.GetRequest{Key: []byte("k")})
	wantStatus(t, err, codes.DeadlineExceeded, rpctypes.ReasonDeadline)
	if ctx.Err() != nil {
		t.Errorf("service answered only after the caller's deadline")
	}
}

// TestServiceMetrics checks the request counter, the per-level read
// counter and the refused counter.
func TestServiceMetrics(t *testing.T) {
	svc, fb, reg := newTestService(t, testLimits())
	bg := context.Background()
	svc.Put(bg, &kvpb.PutRequest{Key: []byte("k")})
	svc.Put(bg, &kvpb.PutRequest{})
	svc.Get(bg, &kvpb.GetRequest{Key: []byte("k"), Read: &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE}})
	fb.setHook(errHook(replication.ErrStaleReplica))
	svc.Get(bg, &kvpb.GetRequest{Key: []byte("k"), Read: &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, MaxStaleness: durationpb.New(time.Millisecond)}})
	svc.Scan(bg, &kvpb.ScanRequest{})

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"dialkv_requests_total", map[string]string{"method": "Put", "code": "OK"}, 1},
		{"dialkv_requests_total", map[string]string{"method": "Put", "code": "InvalidArgument"}, 1},
		{"dialkv_requests_total", map[string]string{"method": "Get", "code": "OK"}, 1},
		{"dialkv_requests_total", map[string]string{"method": "Get", "code": "FailedPrecondition"}, 1},
		{"dialkv_requests_total", map[string]string{"method": "Scan", "code": "FailedPrecondition"}, 1},
		{"dialkv_reads_total", map[string]string{"level": "stale"}, 1},
		{"dialkv_bounded_reads_refused_total", nil, 2},
	} {
		if got := counterValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestParseLevel(t *testing.T) {
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
		{"nonsense", 0, true},
		{"unspecified", 0, true},
		{"1", 0, true},
	}
	for _, tc := range tests {
		got, err := parseLevel(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseLevel(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil {
			wantStatus(t, toStatus(err, opRead), codes.InvalidArgument, rpctypes.ReasonInvalid)
		}
	}
	for c, want := range map[kvpb.Consistency]string{
		kvpb.Consistency_CONSISTENCY_UNSPECIFIED: "linearizable", kvpb.Consistency_CONSISTENCY_LINEARIZABLE: "linearizable",
		kvpb.Consistency_CONSISTENCY_BOUNDED: "bounded", kvpb.Consistency_CONSISTENCY_SESSION: "session",
		kvpb.Consistency_CONSISTENCY_STALE: "stale", kvpb.Consistency(9): "unknown(9)",
	} {
		if got := levelName(c); got != want {
			t.Errorf("levelName(%v) = %q; want %q", c, got, want)
		}
	}
}
