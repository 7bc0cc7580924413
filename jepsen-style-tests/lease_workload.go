package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// LeasePrefix holds the lease workload's keys: LeasePrefix<lease>/<n>,
// each attached to that lease. ("l/" is the register workload's lists.)
const LeasePrefix = "lease/"

// Operation kinds of the lease workload.
const (
	// OpLeaseGrant: Lease.Grant of TTL seconds; ok with the Lease id.
	OpLeaseGrant = "lease-grant"
	// OpLeasePut: a put of Key to Value attached to Lease.
	OpLeasePut = "lease-put"
	// OpLeaseKeepAlive: one keepalive of Lease on a Lease.KeepAlive
	// stream: Start when it was sent, End when answered (ok, TTL the
	// answer's), fail when the lease was not found, info when the
	// answer never came.
	OpLeaseKeepAlive = "lease-keepalive"
	// OpLeaseRevoke: Lease.Revoke of Lease.
	OpLeaseRevoke = "lease-revoke"
	// OpLeaseGet: a linearizable get of a lease key (Missing when absent;
	// RangeID and AppliedIndex from the answer). Process FinalProcess:
	// the final reads after the heal.
	OpLeaseGet = "lease-get"
)

// LeaseProcess numbers the lease clients: client i is LeaseProcess - i.
// Lease requests are not key-value requests: the availability tables and
// the auth checker leave them out, as they do the nemesis's.
const LeaseProcess = -200

// LeaseConfig shapes the lease workload.
type LeaseConfig struct {
	// Clients each run one lease at a time (default 3): grant a TTL
	// between MinTTL and MaxTTL seconds (default 2 and 5), put 1 to 3
	// keys with it, then keep it alive for 1 to 3 TTLs or not at all,
	// then revoke it or let it expire, and read its keys once it must
	// have ended.
	Clients        int
	MinTTL, MaxTTL int64
	// ExpiryBound is how long after its TTL a lease not kept alive may
	// still live (default 3s); see checkLease for how faults extend it.
	ExpiryBound time.Duration
	// FinalWait bounds the wait, after the heal, for every lease to be
	// past its bound before the final reads (default 30s).
	FinalWait time.Duration
}

func (l *LeaseConfig) setDefaults() {
	if l.Clients == 0 {
		l.Clients = 3
	}
	if l.MinTTL == 0 {
		l.MinTTL = 2
	}
	if l.MaxTTL < l.MinTTL {
		l.MaxTTL = max(l.MinTTL, 5)
	}
	if l.ExpiryBound == 0 {
		l.ExpiryBound = 3 * time.Second
	}
	if l.FinalWait == 0 {
		l.FinalWait = 30 * time.Second
	}
}

// leaseKey is the n-th key of lease id.
func leaseKey(id int64, n int) string { return fmt.Sprintf("%s%d/%d", LeasePrefix, id, n) }

// leaseOfKey is the lease a key of the lease workload belongs to.
func leaseOfKey(key string) (int64, bool) {
	rest, ok := strings.CutPrefix(key, LeasePrefix)
	if !ok {
		return 0, false
	}
	id, _, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(id, 10, 64)
	return n, err == nil
}

// leaseClient runs leases one after another.
type leaseClient struct {
	proc    int
	rng     *rand.Rand
	cs      *Conns
	rec     *Recorder
	cfg     LeaseConfig
	timeout time.Duration
	seq     int
}

func (lc *leaseClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		lc.one(ctx)
	}
}

func (lc *leaseClient) node() int { return lc.rng.IntN(len(lc.cs.ids)) }

// record completes op with the client's process and the times, and adds it.
func (lc *leaseClient) record(op Op, start int64) Op {
	op.Process, op.Start, op.End = lc.proc, start, lc.rec.Now()
	lc.rec.Add(op)
	return op
}

// grantLease grants a lease of ttl seconds through node: the op to
// record, its Start and End left to the caller.
func grantLease(ctx context.Context, cs *Conns, node int, ttl int64, timeout time.Duration) Op {
	op := Op{Node: cs.ids[node], API: APIGRPC, F: OpLeaseGrant, TTL: ttl}
	var p peer.Peer
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := kvpb.NewLeaseClient(cs.grpc[node]).Grant(gctx, &kvpb.LeaseGrantRequest{Ttl: ttl}, grpc.Peer(&p))
	if err != nil {
		leaseError(&op, err, &p)
		return op
	}
	op.Type, op.Lease = OK, resp.GetId()
	if resp.GetTtl() > 0 {
		op.TTL = resp.GetTtl()
	}
	return op
}

// renewOn sends one keepalive of op.Lease on stream and fills in op's
// outcome: OK with the TTL answered; Fail when the lease was not found;
// else Info, since a keepalive sent on a stream may have been applied.
func renewOn(stream kvpb.Lease_KeepAliveClient, op *Op) error {
	err := stream.Send(&kvpb.LeaseKeepAliveRequest{Id: op.Lease})
	var resp *kvpb.LeaseKeepAliveResponse
	if err == nil {
		resp, err = stream.Recv()
	}
	if err != nil {
		leaseError(op, err, nil)
		if rpctypes.ReasonOf(err) != reasonLeaseNotFound {
			op.Type = Info
		}
		return err
	}
	op.Type, op.TTL = OK, resp.GetTtl()
	return nil
}

// leaseError fills in a lease request's error: fail when the lease was
// not found or the request provably never left, else info.
func leaseError(op *Op, err error, p *peer.Peer) {
	st, _ := status.FromError(err)
	reason := rpctypes.ReasonOf(err)
	op.Type = Info
	if reason == reasonLeaseNotFound || rpctypes.NeverSent(err, p) || rpctypes.NotApplied(err) {
		op.Type = Fail
	}
	op.Error = fmt.Sprintf("%v %s: %s", st.Code(), reason, truncate(st.Message(), 160))
}

// one runs one lease from grant to its end.
func (lc *leaseClient) one(ctx context.Context) {
	ttl := lc.cfg.MinTTL + lc.rng.Int64N(lc.cfg.MaxTTL-lc.cfg.MinTTL+1)
	start := lc.rec.Now()
	op := grantLease(ctx, lc.cs, lc.node(), ttl, lc.timeout)
	if op.Type != OK {
		lc.record(op, start)
		sleepCtx(ctx, 200*time.Millisecond)
		return
	}
	id, ttlD := op.Lease, time.Duration(op.TTL)*time.Second
	lastEnd := lc.record(op, start).End

	var keys []string
	for n := range 1 + lc.rng.IntN(3) {
		lc.seq++
		s := lc.rec.Now()
		put := lc.cs.write(lc.node(), OpLeasePut, leaseKey(id, n), fmt.Sprintf("lc%d-%d", -lc.proc, lc.seq), "", id, lc.timeout)
		if lc.record(put, s).Type != Fail {
			keys = append(keys, put.Key)
		}
	}
	// 0 expire, 1 keep alive then expire, 2 keep alive then revoke,
	// 3 revoke, 4 revoke racing one more put with the lease (the put's
	// check may pass just before the revoke commits: the revoke must
	// still leave no key behind).
	mode := lc.rng.IntN(5)
	if mode == 1 || mode == 2 {
		keep := time.Duration(float64(ttlD) * (1 + 2*lc.rng.Float64()))
		if end := lc.keepAlive(ctx, id, ttlD, keep, keys); end > 0 {
			lastEnd = end
		}
	}
	var racing chan Op
	if mode == 4 && ctx.Err() == nil {
		lc.seq++
		node, key, value := lc.node(), leaseKey(id, 3), fmt.Sprintf("lc%d-%d", -lc.proc, lc.seq)
		racing = make(chan Op, 1)
		go func() {
			s := lc.rec.Now()
			racing <- lc.record(lc.cs.write(node, OpLeasePut, key, value, "", id, lc.timeout), s)
		}()
	}
	revoked := false
	if mode >= 2 && ctx.Err() == nil {
		node := lc.node()
		s := lc.rec.Now()
		rop := Op{Node: lc.cs.ids[node], API: APIGRPC, F: OpLeaseRevoke, Lease: id}
		var p peer.Peer
		rctx, cancel := context.WithTimeout(ctx, lc.timeout)
		_, err := kvpb.NewLeaseClient(lc.cs.grpc[node]).Revoke(rctx, &kvpb.LeaseRevokeRequest{Id: id}, grpc.Peer(&p))
		cancel()
		if err != nil {
			leaseError(&rop, err, &p)
		} else {
			rop.Type = OK
		}
		revoked = lc.record(rop, s).Type == OK
	}
	if racing != nil {
		if put := <-racing; put.Type != Fail {
			keys = append(keys, put.Key)
		}
	}
	// Read the keys once the lease must have ended (faults may have moved
	// that later: the checker decides).
	if !revoked {
		sleepCtx(ctx, time.Duration(lastEnd-lc.rec.Now())+ttlD+lc.cfg.ExpiryBound+200*time.Millisecond)
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			return
		}
		lc.get(k)
	}
}

// get reads key at the linearizable level and records it.
func (lc *leaseClient) get(key string) Op {
	s := lc.rec.Now()
	op := lc.cs.Do(Request{Node: lc.node(), API: APIGRPC, F: OpGet, Key: key, Level: Linearizable, Timeout: lc.timeout})
	op.F = OpLeaseGet
	return lc.record(op, s)
}

// keepAlive keeps lease id alive for d over a KeepAlive stream (reopened
// through another node when it breaks), a keepalive every TTL/3, reading
// one of keys between keepalives. It returns the time the last
// keepalive that may have been applied was given up or answered.
func (lc *leaseClient) keepAlive(ctx context.Context, id int64, ttl, d time.Duration, keys []string) int64 {
	deadline := time.Now().Add(d)
	var last int64
	var stream kvpb.Lease_KeepAliveClient
	var node int
	var cancel context.CancelFunc = func() {}
	defer func() { cancel() }()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if stream == nil {
			node = lc.node()
			var sctx context.Context
			sctx, cancel = context.WithCancel(ctx)
			var err error
			if stream, err = kvpb.NewLeaseClient(lc.cs.grpc[node]).KeepAlive(sctx); err != nil {
				cancel()
				stream = nil
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
		}
		start := lc.rec.Now()
		op := Op{Node: lc.cs.ids[node], API: APIGRPC, F: OpLeaseKeepAlive, Lease: id}
		// One answer within the op timeout, else the stream is given up.
		timer := time.AfterFunc(lc.timeout, cancel)
		err := renewOn(stream, &op)
		timer.Stop()
		op = lc.record(op, start)
		if op.Type != Fail {
			last = op.End
		}
		if op.Type == Fail {
			return last
		}
		if err != nil {
			cancel()
			stream = nil
			continue
		}
		if len(keys) > 0 {
			lc.get(keys[lc.rng.IntN(len(keys))])
		}
		sleepCtx(ctx, time.Duration(start+int64(ttl/3)-lc.rec.Now()))
	}
	if stream != nil {
		stream.CloseSend()
	}
	return last
}

// leaseSet runs the lease clients.
type leaseSet struct {
	cs  *Conns
	rec *Recorder
	cfg LeaseConfig
	wg  sync.WaitGroup
	// timeout is one request's.
	timeout time.Duration
}

// startLeases starts the lease clients; they stop when ctx ends.
func startLeases(ctx context.Context, cs *Conns, rec *Recorder, cfg LeaseConfig, seed uint64, timeout time.Duration) *leaseSet {
	ls := &leaseSet{cs: cs, rec: rec, cfg: cfg, timeout: timeout}
	for i := range cfg.Clients {
		lc := &leaseClient{proc: LeaseProcess - i, rng: rand.New(rand.NewPCG(seed, uint64(2000+i))), cs: cs, rec: rec, cfg: cfg, timeout: timeout}
		ls.wg.Go(func() { lc.run(ctx) })
	}
	return ls
}

// finish waits for the clients, then until every lease is past the bound
// the checker holds it to (at most cfg.FinalWait), then reads every lease
// key at the linearizable level, retrying through the nodes.
func (ls *leaseSet) finish(ctx context.Context, logf func(string, ...any)) {
	ls.wg.Wait()
	h := ls.rec.History()
	leases := indexLeases(h, ls.cfg.ExpiryBound)
	var until int64
	keys := map[string]bool{}
	for _, l := range leases {
		if len(l.puts) == 0 {
			continue
		}
		until = max(until, l.gone)
		for _, p := range l.puts {
			if p.Type != Fail {
				keys[p.Key] = true
			}
		}
	}
	wait := min(time.Duration(until-ls.rec.Now())+200*time.Millisecond, ls.cfg.FinalWait)
	if wait > 0 {
		logf("jepsen: waiting %v until every lease is past its bound", wait.Round(time.Millisecond))
		sleepCtx(ctx, wait)
	}
	failed := 0
	for _, k := range sortedKeys(keys) {
		ok := false
		for attempt := 0; attempt < 3*len(ls.cs.ids) && ctx.Err() == nil && !ok; attempt++ {
			s := ls.rec.Now()
			op := ls.cs.Do(Request{Node: attempt % len(ls.cs.ids), API: APIGRPC, F: OpGet, Key: k, Level: Linearizable, Timeout: ls.timeout})
			op.F, op.Process, op.Start, op.End = OpLeaseGet, FinalProcess, s, ls.rec.Now()
			ls.rec.Add(op)
			ok = op.Type == OK
		}
		if !ok {
			failed++
		}
	}
	logf("jepsen: final reads of %d lease keys of %d leases: %d never succeeded", len(keys), len(leases), failed)
}
