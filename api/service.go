package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
)

// Backend is what the API needs from a node: the kv.proto methods, with
// plain errors. replication.Node implements it.
type Backend interface {
	Put(context.Context, *kvpb.PutRequest) (*kvpb.PutResponse, error)
	Get(context.Context, *kvpb.GetRequest) (*kvpb.GetResponse, error)
	Delete(context.Context, *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error)
	CompareAndSwap(context.Context, *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error)
	Scan(context.Context, *kvpb.ScanRequest) (*kvpb.ScanResponse, error)
	Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error)
	Members(context.Context, *kvpb.MembersRequest) (*kvpb.MembersResponse, error)
	AddMember(context.Context, *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error)
	RemoveMember(context.Context, *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error)
	Ranges(context.Context, *kvpb.RangesRequest) (*kvpb.RangesResponse, error)
	SplitRange(context.Context, *kvpb.SplitRangeRequest) (*kvpb.SplitRangeResponse, error)
	TransferLeader(context.Context, *kvpb.TransferLeaderRequest) (*kvpb.TransferLeaderResponse, error)
	ReadIndex(context.Context, *kvpb.ReadIndexRequest) (*kvpb.ReadIndexResponse, error)
	MetaPut(context.Context, *kvpb.MetaPutRequest) (*kvpb.MetaPutResponse, error)
	MetaScan(context.Context, *kvpb.MetaScanRequest) (*kvpb.MetaScanResponse, error)
	MetaIncrement(context.Context, *kvpb.MetaIncrementRequest) (*kvpb.MetaIncrementResponse, error)
	CreateReplica(context.Context, *kvpb.CreateReplicaRequest) (*kvpb.CreateReplicaResponse, error)
	DropReplica(context.Context, *kvpb.DropReplicaRequest) (*kvpb.DropReplicaResponse, error)
	ChangeReplicas(context.Context, *kvpb.ChangeReplicasRequest) (*kvpb.ChangeReplicasResponse, error)

	// Watch streams req's events, calling send (never concurrently) for
	// each message until ctx ends or an error; see api/watch.go.
	Watch(ctx context.Context, req *kvpb.WatchRequest, send func(*rpctypes.WatchMessage) error) error
	WatchRange(ctx context.Context, req *kvpb.WatchRangeRequest, send func(*kvpb.WatchRangeResponse) error) error

	LeaseGrant(context.Context, *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error)
	// LeaseKeepAlive renews a lease once.
	LeaseKeepAlive(context.Context, *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error)
	LeaseRevoke(context.Context, *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error)
	LeaseList(context.Context, *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error)
	LeaseTimeToLive(context.Context, *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error)
	LeaseRevokeLocal(context.Context, *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error)
	LeaseKeys(context.Context, *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error)
	Txn(context.Context, *kvpb.TxnRequest) (*kvpb.TxnResponse, error)
	TxnStatus(context.Context, *kvpb.TxnStatusRequest) (*kvpb.TxnStatusResponse, error)
	MetaSwap(context.Context, *kvpb.MetaSwapRequest) (*kvpb.MetaSwapResponse, error)
	RangePropose(context.Context, *kvpb.RangeProposeRequest) (*kvpb.RangeProposeResponse, error)
	TxnLocks(context.Context, *kvpb.TxnLocksRequest) (*kvpb.TxnLocksResponse, error)
	// BackupRange streams one range's backup, calling send (never
	// concurrently) for each chunk; see api/backup.go.
	BackupRange(ctx context.Context, req *kvpb.BackupRangeRequest, send func(*kvpb.BackupRangeChunk) error) error
}

// Limits bound what one request may carry.
type Limits struct {
	MaxKeyBytes   int
	MaxValueBytes int
	MaxScanLimit  uint32
	// DefaultTimeout applies to requests that carry no deadline.
	DefaultTimeout time.Duration
}

// DefaultLimits: 4 KiB keys, 1 MiB values, 10,000 keys per scan page.
func DefaultLimits() Limits {
	return Limits{MaxKeyBytes: 4 << 10, MaxValueBytes: 1 << 20, MaxScanLimit: 10000, DefaultTimeout: 10 * time.Second}
}

// Service implements the gRPC KV, Cluster, Lease, Auth and Internal
// services over a Backend.
type Service struct {
	kvpb.UnimplementedKVServer
	kvpb.UnimplementedClusterServer
	kvpb.UnimplementedInternalServer
	kvpb.UnimplementedAuthServer
	kvpb.UnimplementedLeaseServer

	b       Backend
	limits  Limits
	metrics *Metrics
	log     *slog.Logger
	// auth decides who may do what; nil serves everyone (see SetAuth).
	auth   AuthBackend
	issuer *auth.Issuer
	// passwordCost is the bcrypt cost of new password hashes (see
	// SetPasswordCost); zero is bcrypt's default.
	passwordCost int
	// watchCodec says the service is served by a server with watchCodec
	// (set by NewGRPCServer and NewPeerGRPCServer before they serve).
	watchCodec bool
}

// NewService wraps b. metrics may be shared with the HTTP server.
func NewService(b Backend, limits Limits, metrics *Metrics, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{b: b, limits: limits, metrics: metrics, log: log}
}

// deadline gives the request a deadline when it has none, and keeps a
// margin before the caller's own deadline so the server can still answer
// with a precise error (UNAVAILABLE for a read, INDETERMINATE for a write)
// instead of the client timing out on its side.
func (s *Service) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, s.limits.DefaultTimeout)
	}
	margin := min(time.Until(dl)/10, 100*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}

func (s *Service) checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return invalid("key must not be empty")
	case len(key) > s.limits.MaxKeyBytes:
		return tooLarge("key is %d bytes; the limit is %d", len(key), s.limits.MaxKeyBytes)
	}
	return nil
}

func (s *Service) checkValue(v []byte) error {
	if len(v) > s.limits.MaxValueBytes {
		return tooLarge("value is %d bytes; the limit is %d", len(v), s.limits.MaxValueBytes)
	}
	return nil
}

func checkRead(o *kvpb.ReadOptions) error {
	switch o.GetConsistency() {
	case kvpb.Consistency_CONSISTENCY_UNSPECIFIED, kvpb.Consistency_CONSISTENCY_LINEARIZABLE,
		kvpb.Consistency_CONSISTENCY_STALE, kvpb.Consistency_CONSISTENCY_SESSION:
	case kvpb.Consistency_CONSISTENCY_BOUNDED:
		if o.GetMaxStaleness() == nil || o.GetMaxStaleness().AsDuration() <= 0 {
			return invalid("bounded reads need a positive max_staleness")
		}
	default:
		return invalid("unknown consistency level %d; use linearizable, bounded, session or stale", o.GetConsistency())
	}
	return nil
}

// run is the common path of every method: deadline, call, metrics, error
// table.
func run[Req, Resp any](s *Service, ctx context.Context, method string, kind opKind, req Req, check func(Req) error, call func(context.Context, Req) (Resp, error)) (Resp, error) {
	start := time.Now()
	var resp Resp
	err := check(req)
	expired := false
	if err == nil {
		var cancel context.CancelFunc
		ctx, cancel = s.deadline(ctx)
		resp, err = call(ctx, req)
		expired = err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
	}
	err = classify(err, kind, expired)
	s.metrics.observe(method, start, err)
	return resp, err
}

func (s *Service) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	return run(s, ctx, "Put", opWrite, req, func(r *kvpb.PutRequest) error {
		if err := s.checkKey(r.Key); err != nil {
			return err
		}
		if r.Lease < 0 {
			return invalid("lease id %d is negative; lease ids are positive (0: no lease)", r.Lease)
		}
		return s.checkValue(r.Value)
	}, guarded(func(ctx context.Context, r *kvpb.PutRequest) error { return s.authorizeKey(ctx, auth.OpWrite, r.Key) }, s.b.Put))
}

func (s *Service) Delete(ctx context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	return run(s, ctx, "Delete", opWrite, req, func(r *kvpb.DeleteRequest) error { return s.checkKey(r.Key) },
		guarded(func(ctx context.Context, r *kvpb.DeleteRequest) error {
			return s.authorizeKey(ctx, auth.OpWrite, r.Key)
		}, s.b.Delete))
}

func (s *Service) CompareAndSwap(ctx context.Context, req *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error) {
	return run(s, ctx, "CompareAndSwap", opWrite, req, func(r *kvpb.CompareAndSwapRequest) error {
		if err := s.checkKey(r.Key); err != nil {
			return err
		}
		if r.ExpectMissing && len(r.ExpectedValue) > 0 {
			return invalid("expect_missing and expected_value are exclusive")
		}
		if err := s.checkValue(r.ExpectedValue); err != nil {
			return err
		}
		return s.checkValue(r.NewValue)
	}, guarded(func(ctx context.Context, r *kvpb.CompareAndSwapRequest) error {
		return s.authorizeKey(ctx, auth.OpWrite, r.Key)
	}, s.b.CompareAndSwap))
}

func (s *Service) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	defer s.metrics.observeReadLatency("Get", req.GetRead(), time.Now())
	resp, err := run(s, ctx, "Get", opRead, req, func(r *kvpb.GetRequest) error {
		if err := s.checkKey(r.Key); err != nil {
			return err
		}
		return checkRead(r.Read)
	}, guarded(func(ctx context.Context, r *kvpb.GetRequest) error { return s.authorizeKey(ctx, auth.OpRead, r.Key) }, s.b.Get))
	s.countRead(resp.GetHeader(), err)
	return resp, err
}

func (s *Service) Scan(ctx context.Context, req *kvpb.ScanRequest) (*kvpb.ScanResponse, error) {
	defer s.metrics.observeReadLatency("Scan", req.GetRead(), time.Now())
	resp, err := run(s, ctx, "Scan", opRead, req, func(r *kvpb.ScanRequest) error {
		if len(r.Prefix) > 0 && (len(r.Start) > 0 || len(r.End) > 0) {
			return invalid("give either prefix or start/end, not both")
		}
		if len(r.End) > 0 && bytes.Compare(r.Start, r.End) >= 0 {
			return invalid("scan start %q is not before end %q", r.Start, r.End)
		}
		for _, k := range [][]byte{r.Start, r.End, r.Prefix} {
			if len(k) > s.limits.MaxKeyBytes {
				return tooLarge("scan bound is %d bytes; the limit is %d", len(k), s.limits.MaxKeyBytes)
			}
		}
		if r.Limit > s.limits.MaxScanLimit {
			return invalid("scan limit %d is over the maximum page of %d; page with next_key", r.Limit, s.limits.MaxScanLimit)
		}
		return checkRead(r.Read)
	}, guarded(func(ctx context.Context, r *kvpb.ScanRequest) error {
		start, end := scanBounds(r.Prefix, r.Start, r.End)
		return s.authorizeRange(ctx, auth.OpRead, start, end)
	}, s.b.Scan))
	s.countRead(resp.GetHeader(), err)
	return resp, err
}

func (s *Service) countRead(h *kvpb.ReadHeader, err error) {
	if err == nil {
		s.metrics.observeRead(h)
	} else if rpctypes.ReasonOf(err) == rpctypes.ReasonStaleReplica {
		s.metrics.refused.Inc()
	}
}

func (s *Service) Status(ctx context.Context, req *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	return run(s, ctx, "Status", opRead, req, noCheck[*kvpb.StatusRequest], admin[*kvpb.StatusRequest](s, auth.VerbStatus, s.b.Status))
}

func (s *Service) Members(ctx context.Context, req *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	return run(s, ctx, "Members", opRead, req, noCheck[*kvpb.MembersRequest], admin[*kvpb.MembersRequest](s, auth.VerbStatus, s.b.Members))
}

func checkNodeID(id string) error {
	if id == "" || strings.ContainsAny(id, "=, \t\n") {
		return invalid("node id %q must be non-empty and contain no '=', ',' or spaces", id)
	}
	return nil
}

func (s *Service) AddMember(ctx context.Context, req *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	return run(s, ctx, "AddMember", opWrite, req, func(r *kvpb.AddMemberRequest) error {
		if err := checkNodeID(r.Id); err != nil {
			return err
		}
		if _, _, err := net.SplitHostPort(r.RaftAddr); err != nil {
			return invalid("raft address %q: %v", r.RaftAddr, err)
		}
		return nil
	}, admin[*kvpb.AddMemberRequest](s, auth.VerbMembership, s.b.AddMember))
}

func (s *Service) RemoveMember(ctx context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	return run(s, ctx, "RemoveMember", opWrite, req, func(r *kvpb.RemoveMemberRequest) error { return checkNodeID(r.Id) },
		admin[*kvpb.RemoveMemberRequest](s, auth.VerbMembership, s.b.RemoveMember))
}

func (s *Service) Ranges(ctx context.Context, req *kvpb.RangesRequest) (*kvpb.RangesResponse, error) {
	return run(s, ctx, "Ranges", opRead, req, noCheck[*kvpb.RangesRequest],
		// Clients route by this table, so any authenticated user may read
		// it (it shows range boundaries, which are keys).
		guarded(func(ctx context.Context, _ *kvpb.RangesRequest) error {
			return s.authorize(ctx, func(*auth.State, string) error { return nil })
		}, s.b.Ranges))
}

func (s *Service) SplitRange(ctx context.Context, req *kvpb.SplitRangeRequest) (*kvpb.SplitRangeResponse, error) {
	return run(s, ctx, "SplitRange", opWrite, req, func(r *kvpb.SplitRangeRequest) error { return s.checkKey(r.Key) },
		admin[*kvpb.SplitRangeRequest](s, auth.VerbSplit, s.b.SplitRange))
}

func (s *Service) TransferLeader(ctx context.Context, req *kvpb.TransferLeaderRequest) (*kvpb.TransferLeaderResponse, error) {
	return run(s, ctx, "TransferLeader", opWrite, req, func(r *kvpb.TransferLeaderRequest) error {
		if r.RangeId == 0 {
			return invalid("transfer leader needs a range id")
		}
		return checkNodeID(r.ToNode)
	}, admin[*kvpb.TransferLeaderRequest](s, auth.VerbMembership, s.b.TransferLeader))
}

func (s *Service) MetaPut(ctx context.Context, req *kvpb.MetaPutRequest) (*kvpb.MetaPutResponse, error) {
	return run(s, ctx, "MetaPut", opWrite, req, func(r *kvpb.MetaPutRequest) error {
		if len(r.Key) == 0 || len(r.Value) < 16 {
			return invalid("meta put needs a key and a versioned value")
		}
		return nil
	}, s.b.MetaPut)
}

func (s *Service) MetaScan(ctx context.Context, req *kvpb.MetaScanRequest) (*kvpb.MetaScanResponse, error) {
	return run(s, ctx, "MetaScan", opRead, req, noCheck[*kvpb.MetaScanRequest], s.b.MetaScan)
}

func (s *Service) MetaIncrement(ctx context.Context, req *kvpb.MetaIncrementRequest) (*kvpb.MetaIncrementResponse, error) {
	return run(s, ctx, "MetaIncrement", opWrite, req, func(r *kvpb.MetaIncrementRequest) error { return s.checkKey(r.Key) }, s.b.MetaIncrement)
}

func (s *Service) CreateReplica(ctx context.Context, req *kvpb.CreateReplicaRequest) (*kvpb.CreateReplicaResponse, error) {
	return run(s, ctx, "CreateReplica", opWrite, req, func(r *kvpb.CreateReplicaRequest) error {
		if r.GetRange().GetId() == 0 {
			return invalid("create replica needs a range")
		}
		return nil
	}, s.b.CreateReplica)
}

func (s *Service) DropReplica(ctx context.Context, req *kvpb.DropReplicaRequest) (*kvpb.DropReplicaResponse, error) {
	return run(s, ctx, "DropReplica", opWrite, req, noCheck[*kvpb.DropReplicaRequest], s.b.DropReplica)
}

func (s *Service) ChangeReplicas(ctx context.Context, req *kvpb.ChangeReplicasRequest) (*kvpb.ChangeReplicasResponse, error) {
	return run(s, ctx, "ChangeReplicas", opWrite, req, noCheck[*kvpb.ChangeReplicasRequest], s.b.ChangeReplicas)
}

func noCheck[T any](T) error { return nil }

// guarded runs call once authz allows the request.
func guarded[Req, Resp any](authz func(context.Context, Req) error, call func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Resp, error) {
	return func(ctx context.Context, r Req) (Resp, error) {
		if err := authz(ctx, r); err != nil {
			var zero Resp
			return zero, err
		}
		return call(ctx, r)
	}
}

// admin guards a Cluster method: it needs the root role.
func admin[Req, Resp any](s *Service, verb auth.Verb, call func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Resp, error) {
	return guarded(func(ctx context.Context, _ Req) error { return s.authorizeAdmin(ctx, verb) }, call)
}

func (s *Service) ReadIndex(ctx context.Context, req *kvpb.ReadIndexRequest) (*kvpb.ReadIndexResponse, error) {
	return run(s, ctx, "ReadIndex", opRead, req, func(r *kvpb.ReadIndexRequest) error {
		if len(r.RangeIds) > 10000 {
			return invalid("read index for %d ranges; at most 10000 per request", len(r.RangeIds))
		}
		return nil
	}, s.b.ReadIndex)
}

func levelName(c kvpb.Consistency) string {
	if n, ok := rpctypes.ConsistencyName(c); ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", c)
}

// parseLevel accepts the level names used by HTTP and kvctl.
func parseLevel(s string) (kvpb.Consistency, error) {
	if c, ok := rpctypes.LookupConsistency(s); ok {
		return c, nil
	}
	return 0, invalid("unknown consistency level %q; use linearizable, bounded, session or stale", s)
}
