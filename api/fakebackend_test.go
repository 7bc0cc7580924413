package api

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeCall is one call the fake backend received.
type fakeCall struct {
	method string
	req    any
	// deadline is the deadline of the context the backend was given.
	deadline    time.Time
	hasDeadline bool
}

// fakeHook answers one backend call. Returning a nil resp with a nil
// error makes the fake answer with its default response for the method.
type fakeHook func(ctx context.Context, method string, req any) (resp any, err error)

// fakeBackend implements Backend: it records every call and answers with
// hook, or with canned default responses.
type fakeBackend struct {
	mu    sync.Mutex
	calls []fakeCall
	hook  fakeHook
}

var _ Backend = (*fakeBackend)(nil)

func (f *fakeBackend) setHook(h fakeHook) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

func (f *fakeBackend) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *fakeBackend) callList() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.calls...)
}

func (f *fakeBackend) numCalls() int { return len(f.callList()) }

// lastCall returns the most recent call; it fails the test when there was none.
func (f *fakeBackend) lastCall(t *testing.T) fakeCall {
	t.Helper()
	calls := f.callList()
	if len(calls) == 0 {
		t.Fatalf("backend was not called")
	}
	return calls[len(calls)-1]
}

// errHook makes every method fail with err.
func errHook(err error) fakeHook {
	return func(context.Context, string, any) (any, error) { return nil, err }
}

// blockHook waits for the context to end, then returns resp together with
// wrap(ctx.Err()): a backend that could not finish before the deadline.
func blockHook(resp any, wrap func(error) error) fakeHook {
	return func(ctx context.Context, _ string, _ any) (any, error) {
		<-ctx.Done()
		err := ctx.Err()
		if wrap != nil {
			err = wrap(err)
		}
		return resp, err
	}
}

func fakeDo[T any](f *fakeBackend, ctx context.Context, method string, req any, def func() T) (T, error) {
	c := fakeCall{method: method, req: req}
	c.deadline, c.hasDeadline = ctx.Deadline()
	f.mu.Lock()
	f.calls = append(f.calls, c)
	hook := f.hook
	f.mu.Unlock()
	if hook == nil {
		return def(), nil
	}
	resp, err := hook(ctx, method, req)
	if resp == nil {
		if err != nil {
			var zero T
			return zero, err
		}
		return def(), nil
	}
	return resp.(T), err
}

func defaultWriteHeader() *kvpb.WriteHeader {
	return &kvpb.WriteHeader{ServedBy: "n1", RangeId: 7, Revision: 42, SessionToken: "7:42"}
}

func defaultReadHeader(o *kvpb.ReadOptions) *kvpb.ReadHeader {
	level := o.GetConsistency()
	if level == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		level = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	}
	return &kvpb.ReadHeader{ServedBy: "n2", RangeId: 7, AppliedIndex: 41, Consistency: level, SessionToken: "7:41"}
}

func (f *fakeBackend) Put(ctx context.Context, r *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	return fakeDo(f, ctx, "Put", r, func() *kvpb.PutResponse { return &kvpb.PutResponse{Header: defaultWriteHeader()} })
}

func (f *fakeBackend) Get(ctx context.Context, r *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	return fakeDo(f, ctx, "Get", r, func() *kvpb.GetResponse {
		return &kvpb.GetResponse{Header: defaultReadHeader(r.Read), Kv: &kvpb.KeyValue{Key: r.Key, Value: []byte("value"), Revision: 40}}
	})
}

func (f *fakeBackend) Delete(ctx context.Context, r *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	return fakeDo(f, ctx, "Delete", r, func() *kvpb.DeleteResponse {
		return &kvpb.DeleteResponse{Header: defaultWriteHeader(), Deleted: true}
	})
}

func (f *fakeBackend) CompareAndSwap(ctx context.Context, r *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error) {
	return fakeDo(f, ctx, "CompareAndSwap", r, func() *kvpb.CompareAndSwapResponse {
		return &kvpb.CompareAndSwapResponse{Header: defaultWriteHeader()}
	})
}

func (f *fakeBackend) Scan(ctx context.Context, r *kvpb.ScanRequest) (*kvpb.ScanResponse, error) {
	return fakeDo(f, ctx, "Scan", r, func() *kvpb.ScanResponse { return &kvpb.ScanResponse{Header: defaultReadHeader(r.Read)} })
}

func (f *fakeBackend) Status(ctx context.Context, r *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	return fakeDo(f, ctx, "Status", r, func() *kvpb.StatusResponse { return &kvpb.StatusResponse{} })
}

func (f *fakeBackend) Members(ctx context.Context, r *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	return fakeDo(f, ctx, "Members", r, func() *kvpb.MembersResponse {
		return &kvpb.MembersResponse{Members: []*kvpb.Member{{Id: "n1", RaftAddr: "127.0.0.1:7012", GrpcAddr: "127.0.0.1:7010"}}}
	})
}

func (f *fakeBackend) AddMember(ctx context.Context, r *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	return fakeDo(f, ctx, "AddMember", r, func() *kvpb.AddMemberResponse { return &kvpb.AddMemberResponse{} })
}

func (f *fakeBackend) RemoveMember(ctx context.Context, r *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	return fakeDo(f, ctx, "RemoveMember", r, func() *kvpb.RemoveMemberResponse { return &kvpb.RemoveMemberResponse{} })
}

func (f *fakeBackend) Ranges(ctx context.Context, r *kvpb.RangesRequest) (*kvpb.RangesResponse, error) {
	return fakeDo(f, ctx, "Ranges", r, func() *kvpb.RangesResponse { return &kvpb.RangesResponse{} })
}

func (f *fakeBackend) TransferLeader(ctx context.Context, r *kvpb.TransferLeaderRequest) (*kvpb.TransferLeaderResponse, error) {
	return fakeDo(f, ctx, "TransferLeader", r, func() *kvpb.TransferLeaderResponse { return &kvpb.TransferLeaderResponse{} })
}

func (f *fakeBackend) SplitRange(ctx context.Context, r *kvpb.SplitRangeRequest) (*kvpb.SplitRangeResponse, error) {
	return fakeDo(f, ctx, "SplitRange", r, func() *kvpb.SplitRangeResponse { return &kvpb.SplitRangeResponse{} })
}

func (f *fakeBackend) ReadIndex(ctx context.Context, r *kvpb.ReadIndexRequest) (*kvpb.ReadIndexResponse, error) {
	return fakeDo(f, ctx, "ReadIndex", r, func() *kvpb.ReadIndexResponse { return &kvpb.ReadIndexResponse{} })
}

func (f *fakeBackend) MetaPut(ctx context.Context, r *kvpb.MetaPutRequest) (*kvpb.MetaPutResponse, error) {
	return fakeDo(f, ctx, "MetaPut", r, func() *kvpb.MetaPutResponse { return &kvpb.MetaPutResponse{} })
}

func (f *fakeBackend) MetaScan(ctx context.Context, r *kvpb.MetaScanRequest) (*kvpb.MetaScanResponse, error) {
	return fakeDo(f, ctx, "MetaScan", r, func() *kvpb.MetaScanResponse { return &kvpb.MetaScanResponse{} })
}

func (f *fakeBackend) MetaIncrement(ctx context.Context, r *kvpb.MetaIncrementRequest) (*kvpb.MetaIncrementResponse, error) {
	return fakeDo(f, ctx, "MetaIncrement", r, func() *kvpb.MetaIncrementResponse { return &kvpb.MetaIncrementResponse{} })
}

func (f *fakeBackend) CreateReplica(ctx context.Context, r *kvpb.CreateReplicaRequest) (*kvpb.CreateReplicaResponse, error) {
	return fakeDo(f, ctx, "CreateReplica", r, func() *kvpb.CreateReplicaResponse { return &kvpb.CreateReplicaResponse{} })
}

func (f *fakeBackend) DropReplica(ctx context.Context, r *kvpb.DropReplicaRequest) (*kvpb.DropReplicaResponse, error) {
	return fakeDo(f, ctx, "DropReplica", r, func() *kvpb.DropReplicaResponse { return &kvpb.DropReplicaResponse{} })
}

func (f *fakeBackend) ChangeReplicas(ctx context.Context, r *kvpb.ChangeReplicasRequest) (*kvpb.ChangeReplicasResponse, error) {
	return fakeDo(f, ctx, "ChangeReplicas", r, func() *kvpb.ChangeReplicasResponse { return &kvpb.ChangeReplicasResponse{} })
}

// testLimits are small so that size limits are cheap to cross.
func testLimits() Limits {
	return Limits{MaxKeyBytes: 8, MaxValueBytes: 16, MaxScanLimit: 100, DefaultTimeout: 3 * time.Second}
}

// newTestService returns a Service over a fresh fake backend, with its
// metrics in their own registry.
func newTestService(t *testing.T, limits Limits) (*Service, *fakeBackend, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	fb := &fakeBackend{}
	return NewService(fb, limits, NewMetrics(reg), nil), fb, reg
}

// wantStatus checks that err is a gRPC status with code and dialkv reason
// (reason "" means: no dialkv ErrorInfo).
func wantStatus(t *testing.T, err error, code codes.Code, reason rpctypes.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error; want %v/%s", code, reason)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a gRPC status", err, err)
	}
	if st.Code() != code {
		t.Errorf("code = %v; want %v (err: %v)", st.Code(), code, err)
	}
	info := rpctypes.InfoOf(err)
	switch {
	case reason == "" && info != nil:
		t.Errorf("reason = %s; want no dialkv ErrorInfo (err: %v)", info.Reason, err)
	case reason != "" && info == nil:
		t.Errorf("no dialkv ErrorInfo; want reason %s (err: %v)", reason, err)
	case reason != "" && info.Reason != string(reason):
		t.Errorf("reason = %s; want %s (err: %v)", info.Reason, reason, err)
	}
	if reason != "" && !strings.HasPrefix(st.Message(), "dialkv: ") {
		t.Errorf("message %q does not start with \"dialkv: \"", st.Message())
	}
}

// counterValue returns the value of counter family name with the given
// labels in reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// watchScript is what a hook returns for Watch and WatchRange: the
// messages the fake sends, in order, before it returns the hook's error.
type watchScript[T any] []T

// fakeStream runs a Watch or WatchRange call: the hook's messages, then
// its error; without a hook, def's messages and no error.
func fakeStream[T any](f *fakeBackend, ctx context.Context, method string, req any, send func(T) error, def func() watchScript[T]) error {
	msgs, err := fakeDo(f, ctx, method, req, def)
	for _, m := range msgs {
		if serr := send(m); serr != nil {
			return serr
		}
	}
	return err
}

func (f *fakeBackend) Watch(ctx context.Context, r *kvpb.WatchRequest, send func(*rpctypes.WatchMessage) error) error {
	// Messages with events go out as a node sends them: each event
	// encoded once (rpctypes.EncodeWatchEvent), for the server's codec.
	resp := func(m *kvpb.WatchResponse) error {
		wm := &rpctypes.WatchMessage{Resp: m}
		if len(m.Events) > 0 {
			enc, err := rpctypes.EncodeWatchEvents(m.Events)
			if err != nil {
				return err
			}
			wm.Encoded = enc
		}
		return send(wm)
	}
	return fakeStream(f, ctx, "Watch", r, resp, func() watchScript[*kvpb.WatchResponse] {
		return watchScript[*kvpb.WatchResponse]{{Cursor: "7:41"}}
	})
}

func (f *fakeBackend) WatchRange(ctx context.Context, r *kvpb.WatchRangeRequest, send func(*kvpb.WatchRangeResponse) error) error {
	return fakeStream(f, ctx, "WatchRange", r, send, func() watchScript[*kvpb.WatchRangeResponse] {
		return watchScript[*kvpb.WatchRangeResponse]{{UpTo: r.After}}
	})
}

func (f *fakeBackend) LeaseGrant(ctx context.Context, r *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	return fakeDo(f, ctx, "LeaseGrant", r, func() *kvpb.LeaseGrantResponse { return &kvpb.LeaseGrantResponse{Id: 7587862, Ttl: r.Ttl} })
}

func (f *fakeBackend) LeaseKeepAlive(ctx context.Context, r *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	return fakeDo(f, ctx, "LeaseKeepAlive", r, func() *kvpb.LeaseKeepAliveResponse { return &kvpb.LeaseKeepAliveResponse{Id: r.Id, Ttl: 10} })
}

func (f *fakeBackend) LeaseRevoke(ctx context.Context, r *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	return fakeDo(f, ctx, "LeaseRevoke", r, func() *kvpb.LeaseRevokeResponse { return &kvpb.LeaseRevokeResponse{KeysDeleted: 2} })
}

func (f *fakeBackend) LeaseList(ctx context.Context, r *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	return fakeDo(f, ctx, "LeaseList", r, func() *kvpb.LeaseListResponse {
		return &kvpb.LeaseListResponse{Leases: []*kvpb.LeaseStatus{{Id: 7587862, GrantedTtl: 10, Ttl: 9}}}
	})
}

func (f *fakeBackend) LeaseTimeToLive(ctx context.Context, r *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	return fakeDo(f, ctx, "LeaseTimeToLive", r, func() *kvpb.LeaseTimeToLiveResponse {
		resp := &kvpb.LeaseTimeToLiveResponse{Id: r.Id, GrantedTtl: 10, Ttl: 9}
		if r.Keys {
			resp.Keys = [][]byte{[]byte("a"), []byte("b")}
		}
		return resp
	})
}

func (f *fakeBackend) LeaseRevokeLocal(ctx context.Context, r *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error) {
	return fakeDo(f, ctx, "LeaseRevokeLocal", r, func() *kvpb.LeaseRevokeLocalResponse { return &kvpb.LeaseRevokeLocalResponse{KeysDeleted: 1} })
}

func (f *fakeBackend) LeaseKeys(ctx context.Context, r *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error) {
	return fakeDo(f, ctx, "LeaseKeys", r, func() *kvpb.LeaseKeysResponse { return &kvpb.LeaseKeysResponse{} })
}

func (f *fakeBackend) Txn(ctx context.Context, r *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	return fakeDo(f, ctx, "Txn", r, func() *kvpb.TxnResponse { return &kvpb.TxnResponse{Succeeded: true, Id: r.Id} })
}

func (f *fakeBackend) TxnStatus(ctx context.Context, r *kvpb.TxnStatusRequest) (*kvpb.TxnStatusResponse, error) {
	return fakeDo(f, ctx, "TxnStatus", r, func() *kvpb.TxnStatusResponse {
		return &kvpb.TxnStatusResponse{Id: r.Id, State: kvpb.TxnState_TXN_STATE_PENDING}
	})
}

func (f *fakeBackend) MetaSwap(ctx context.Context, r *kvpb.MetaSwapRequest) (*kvpb.MetaSwapResponse, error) {
	return fakeDo(f, ctx, "MetaSwap", r, func() *kvpb.MetaSwapResponse { return &kvpb.MetaSwapResponse{Swapped: true} })
}

func (f *fakeBackend) RangePropose(ctx context.Context, r *kvpb.RangeProposeRequest) (*kvpb.RangeProposeResponse, error) {
	return fakeDo(f, ctx, "RangePropose", r, func() *kvpb.RangeProposeResponse { return &kvpb.RangeProposeResponse{} })
}

func (f *fakeBackend) TxnLocks(ctx context.Context, r *kvpb.TxnLocksRequest) (*kvpb.TxnLocksResponse, error) {
	return fakeDo(f, ctx, "TxnLocks", r, func() *kvpb.TxnLocksResponse { return &kvpb.TxnLocksResponse{} })
}

func (f *fakeBackend) BackupRange(ctx context.Context, r *kvpb.BackupRangeRequest, send func(*kvpb.BackupRangeChunk) error) error {
	return fakeStream(f, ctx, "BackupRange", r, send, func() watchScript[*kvpb.BackupRangeChunk] {
		return watchScript[*kvpb.BackupRangeChunk]{{AppliedIndex: 7, Range: &kvpb.RangeDescriptor{Id: r.RangeId}}, {Last: true}}
	})
}
