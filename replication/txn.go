package replication

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	rand2 "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
)

// Transactions. One whose keys are all in one range is one log entry in
// that range (OpTxn), proposed on its leader: atomic and isolated by
// construction. One across ranges runs two-phase commit from the node the
// client reached (the coordinator):
//
//  1. Prepare: in every range it touches, OpTxnPrepare evaluates the
//     compares and reads there and locks each key it compares, reads or
//     writes, storing with each written key the write either outcome
//     makes. A key another transaction holds refuses the prepare.
//  2. Decide: one compare-and-swap of the transaction's record in the meta
//     range, from missing to COMMITTED (with whether the compares held).
//     That swap is the commit point; whoever swaps first decides, and a
//     node that finds a transaction abandoned swaps it to ABORTED instead.
//  3. Resolve: OpTxnResolve in each range applies the chosen writes and
//     drops the locks. The coordinator answers once every range resolved,
//     with each range's index, so a session token covers the writes.
//
// Locks keep every key a transaction read or compared unchanged until it
// ends, and the decision is one swap: the transaction is serializable.
// Reads never see a lock's write before its range resolves it; a
// linearizable read that meets a lock of a committed transaction resolves
// it first, so it never misses a write acknowledged before it began.
// Stale and bounded reads see the last resolved state of each range, never
// half a transaction in a range.
//
// Each attempt of a transaction locks under its own name (id#attempt), so
// a late prepare of an abandoned attempt can never be committed by a later
// one. A lock older than txnAbandonAfter whose transaction has not decided
// is aborted by whoever meets it: a plain write, another transaction, a
// linearizable read, or the range leader's resolver, which looks every
// txnResolveEvery. So a dead coordinator's locks go within about
// txnAbandonAfter + txnResolveEvery.

const (
	metaTxnPrefix   = "txn/"
	txnRecordV1     = 1
	txnFeature      = "txn-v1"
	txnAbandonAfter = 5 * time.Second
	txnResolveEvery = 2 * time.Second
	// txnAttempts bounds how often a cross-range transaction is tried
	// again after meeting another's locks.
	txnAttempts = 6
	// MaxTxnOps bounds the compares plus operations of one transaction.
	MaxTxnOps = 128
	// txnKeep is how long a decided cross-range transaction's record and
	// a single-range transaction's outcome are kept for TxnStatus;
	// txnForgetEvery how often old ones are looked for.
	txnKeep        = 10 * time.Minute
	txnForgetEvery = time.Minute
)

// ErrTxnConflict: a transaction kept meeting others' locks and gave up;
// nothing of it was applied. Retry it.
var ErrTxnConflict = errors.New("replication: transaction conflicted with others; nothing was applied")

// ErrTxnIDUsed: a transaction was sent again with the id of one that has
// committed; nothing ran this time.
var ErrTxnIDUsed = errors.New("replication: transaction id already used")

// ErrCrossRange: a transaction asked for what only a single-range one can
// do (a scan over keys of several ranges).
var ErrCrossRange = errors.New("replication: not possible across ranges")

// txnRecord is a cross-range transaction's decision in the meta range.
type txnRecord struct {
	state     raftstore.TxnState
	attempt   uint64
	succeeded bool
	// at is when the record was written (Unix ms, the writer's wall
	// clock): only for forgetting old records, never for deciding.
	at int64
}

func (r txnRecord) encode() []byte {
	b := []byte{txnRecordV1, byte(r.state)}
	b = binary.AppendUvarint(b, r.attempt)
	if r.succeeded {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return binary.AppendUvarint(b, uint64(r.at))
}

func decodeTxnRecord(b []byte) (txnRecord, bool) {
	if len(b) < 3 || b[0] != txnRecordV1 {
		return txnRecord{}, false
	}
	r := txnRecord{state: raftstore.TxnState(b[1])}
	a, w := binary.Uvarint(b[2:])
	if w <= 0 || len(b) < 2+w+1 {
		return txnRecord{}, false
	}
	r.attempt, r.succeeded = a, b[2+w] == 1
	at, w2 := binary.Uvarint(b[2+w+1:])
	if w2 <= 0 {
		return txnRecord{}, false
	}
	r.at = int64(at)
	return r, true
}

func txnKey(id string) []byte { return []byte(metaTxnPrefix + id) }

// attemptName is what an attempt's locks carry; splitAttempt undoes it.
func attemptName(id string, attempt uint64) string {
	return id + "#" + strconv.FormatUint(attempt, 10)
}

func splitAttempt(name string) (string, uint64) {
	i := strings.LastIndexByte(name, '#')
	if i < 0 {
		return name, 0
	}
	a, _ := strconv.ParseUint(name[i+1:], 10, 64)
	return name[:i], a
}

// newTxnID names a transaction whose client gave it no id.
func newTxnID(node string) string {
	var b [12]byte
	rand.Read(b[:])
	return node + "-" + hex.EncodeToString(b[:])
}

// txnPlan is a transaction translated for the state machine, with the
// range of every key.
type txnPlan struct {
	id               string
	compares         []raftstore.TxnCompare
	success, failure []raftstore.TxnOp
}

// leases returns the leases the plan's puts attach keys to, each once.
func (p *txnPlan) leases() []uint64 {
	var out []uint64
	for _, ops := range [][]raftstore.TxnOp{p.success, p.failure} {
		for _, o := range ops {
			if o.Kind == raftstore.TxnPut && o.Lease != 0 && !slices.Contains(out, o.Lease) {
				out = append(out, o.Lease)
			}
		}
	}
	return out
}

func planTxn(req *kvpb.TxnRequest) (*txnPlan, error) {
	p := &txnPlan{id: req.Id}
	for _, c := range req.Compares {
		p.compares = append(p.compares, raftstore.TxnCompare{
			Key: c.Key, Target: raftstore.CompareTarget(c.Target), Result: raftstore.CompareResult(c.Result),
			Value: c.Value, Exists: c.Exists, Version: uint64(max(c.Version, 0)), RangeID: c.RangeId, Index: c.Index,
		})
	}
	conv := func(ops []*kvpb.TxnOp) ([]raftstore.TxnOp, error) {
		var out []raftstore.TxnOp
		for i, o := range ops {
			switch {
			case o.GetPut() != nil:
				out = append(out, raftstore.TxnOp{Kind: raftstore.TxnPut, Key: o.GetPut().Key, Value: o.GetPut().Value, Lease: uint64(max(o.GetPut().Lease, 0))})
			case o.GetDelete() != nil:
				out = append(out, raftstore.TxnOp{Kind: raftstore.TxnDelete, Key: o.GetDelete().Key})
			case o.GetGet() != nil:
				out = append(out, raftstore.TxnOp{Kind: raftstore.TxnGet, Key: o.GetGet().Key})
			case o.GetScan() != nil:
				sc := o.GetScan()
				start, end := sc.Start, sc.End
				if len(sc.Prefix) > 0 {
					start, end = sc.Prefix, PrefixEnd(sc.Prefix)
				}
				if len(end) == 0 {
					end = nil
				}
				out = append(out, raftstore.TxnOp{Kind: raftstore.TxnScan, Key: start, End: end, Limit: sc.Limit})
			default:
				return nil, fmt.Errorf("replication: transaction operation %d is empty", i)
			}
		}
		return out, nil
	}
	var err error
	if p.success, err = conv(req.Success); err != nil {
		return nil, err
	}
	if p.failure, err = conv(req.Failure); err != nil {
		return nil, err
	}
	return p, nil
}

// rangeOf returns the user range holding key in the routing table.
func rangeOf(t *kvpb.RangesResponse, key []byte) *kvpb.RangeDescriptor {
	for _, d := range userRanges(t) {
		if containsKey(d, key) {
			return d
		}
	}
	return nil
}

// group maps every key of the plan to its range. A scan must lie in one
// range (ErrCrossRange otherwise).
func (p *txnPlan) group(t *kvpb.RangesResponse) (map[uint64][]byte, error) {
	first := map[uint64][]byte{} // range -> a key of it, to route by
	add := func(k []byte) error {
		d := rangeOf(t, k)
		if d == nil {
			return fmt.Errorf("%w: no range holds key %q", ErrKeyOutOfRange, k)
		}
		if _, ok := first[d.Id]; !ok {
			first[d.Id] = k
		}
		return nil
	}
	for _, c := range p.compares {
		if err := add(c.Key); err != nil {
			return nil, err
		}
	}
	for _, ops := range [][]raftstore.TxnOp{p.success, p.failure} {
		for _, o := range ops {
			if err := add(o.Key); err != nil {
				return nil, err
			}
			if o.Kind == raftstore.TxnScan {
				d := rangeOf(t, o.Key)
				if len(d.End) > 0 && (o.End == nil || bytes.Compare(o.End, d.End) > 0) {
					return nil, fmt.Errorf("%w: the scan of [%q, %q) spans ranges", ErrCrossRange, o.Key, o.End)
				}
			}
		}
	}
	return first, nil
}

// Txn runs a transaction: in one range as one log entry, across ranges by
// two-phase commit.
func (n *Node) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if err := n.requireFeature(ctx, txnFeature); err != nil {
		return nil, err
	}
	plan, err := planTxn(req)
	if err != nil {
		return nil, err
	}
	if plan.id == "" {
		plan.id = newTxnID(n.cfg.NodeID)
	}
	// Counted from before the check (leaseWrites): in one range, this
	// node proposes the entry when it leads the range, else the leader
	// it forwards to checks again (and counts it); across ranges, the
	// leases are checked again after the prepare.
	leases := plan.leases()
	lw := n.leaseWrites.begin(leases...)
	defer lw.release()
	if err := n.checkLeasesForPut(ctx, leases); err != nil {
		return nil, err
	}
	if len(leases) > 0 {
		n.leaseChecked()
	}
	for attempt := uint64(1); ; attempt++ {
		t, err := n.routes.get(ctx)
		if err != nil {
			return nil, err
		}
		ranges, err := plan.group(t)
		if err != nil {
			return nil, err
		}
		var resp *kvpb.TxnResponse
		if len(ranges) == 1 {
			for _, key := range ranges {
				resp, err = n.txnOneRange(ctx, plan, key, lw)
			}
		} else {
			resp, err = n.txnAcross(ctx, plan, t, attempt)
		}
		if err == nil || ctx.Err() != nil {
			return resp, err
		}
		if attempt >= txnAttempts {
			if errors.Is(err, errTxnRetry) {
				return nil, fmt.Errorf("%w: transaction %s met other transactions' locks %d times", ErrTxnConflict, plan.id, attempt)
			}
			return resp, err
		}
		switch {
		case errors.Is(err, raftstore.ErrWrongRange), errors.Is(err, ErrKeyOutOfRange):
			// A split moved keys since the table was read.
			n.routes.invalidate()
		case errors.Is(err, errTxnRetry):
		default:
			return resp, err
		}
		if err := sleepCtx(ctx, time.Duration(rand2.Int64N(int64(20*time.Millisecond)*int64(attempt)))); err != nil {
			return nil, err
		}
	}
}

// errTxnRetry: this attempt met another transaction's locks and undid
// itself; the next may succeed.
var errTxnRetry = errors.New("replication: transaction attempt conflicted")

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// txnOneRange proposes a single-range transaction on its range's leader.
func (n *Node) txnOneRange(ctx context.Context, plan *txnPlan, key []byte, lw *leaseWrite) (*kvpb.TxnResponse, error) {
	spec := &raftstore.TxnSpec{ID: plan.id, Compares: plan.compares, Success: plan.success, Failure: plan.failure}
	cmd := &raftstore.Command{Op: raftstore.OpTxn, Value: spec.Encode()}
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.TxnResponse, error) {
		return kvpb.NewKVClient(conn).Txn(ctx, planRequest(plan))
	}
	return route(ctx, n, key, func(s *shard.Shard) (*kvpb.TxnResponse, error) {
		res, fwd, err := n.proposeMeeting(ctx, s, cmd, lw)
		if fwd {
			return forward(ctx, n, s, true, remote)
		}
		if err != nil {
			return nil, err
		}
		if res.Txn == nil {
			return nil, fmt.Errorf("replication: range %d answered a transaction without its result", s.ID())
		}
		return n.txnResponse(plan, res.Txn, map[uint64]uint64{s.ID(): res.Revision}, s.ID(), res.Revision), nil
	}, remote)
}

// planRequest rebuilds the request a plan came from, id included, for
// forwarding (the id must travel so that a retry applies once).
func planRequest(p *txnPlan) *kvpb.TxnRequest {
	req := &kvpb.TxnRequest{Id: p.id}
	for _, c := range p.compares {
		req.Compares = append(req.Compares, &kvpb.Compare{Key: c.Key, Target: kvpb.Compare_Target(c.Target), Result: kvpb.Compare_Result(c.Result), Value: c.Value, Exists: c.Exists, Version: int64(min(c.Version, math.MaxInt64)), RangeId: c.RangeID, Index: c.Index})
	}
	conv := func(ops []raftstore.TxnOp) []*kvpb.TxnOp {
		var out []*kvpb.TxnOp
		for _, o := range ops {
			switch o.Kind {
			case raftstore.TxnPut:
				out = append(out, &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: o.Key, Value: o.Value, Lease: int64(o.Lease)}}})
			case raftstore.TxnDelete:
				out = append(out, &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteRequest{Key: o.Key}}})
			case raftstore.TxnGet:
				out = append(out, &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: o.Key}}})
			case raftstore.TxnScan:
				out = append(out, &kvpb.TxnOp{Op: &kvpb.TxnOp_Scan{Scan: &kvpb.ScanRequest{Start: o.Key, End: o.End, Limit: o.Limit}}})
			}
		}
		return out
	}
	req.Success, req.Failure = conv(p.success), conv(p.failure)
	return req
}

// txnResponse builds the answer from the branch's results. index maps
// each range written to the index of its writes; rangeOfKey, for a
// single-range transaction, is that range.
func (n *Node) txnResponse(plan *txnPlan, r *raftstore.TxnResult, index map[uint64]uint64, single uint64, singleIndex uint64) *kvpb.TxnResponse {
	resp := &kvpb.TxnResponse{Succeeded: r.Succeeded, Id: plan.id}
	tok := sessionToken{}
	for id, idx := range index {
		resp.Headers = append(resp.Headers, &kvpb.WriteHeader{ServedBy: n.cfg.NodeID, RangeId: id, Revision: idx, SessionToken: sessionToken{id: idx}.String()})
		tok[id] = idx
	}
	slices.SortFunc(resp.Headers, func(a, b *kvpb.WriteHeader) int { return int(a.RangeId) - int(b.RangeId) })
	resp.SessionToken = tok.String()
	if r.Outcome != nil {
		// Applied before (a retry of the same id): the writes are there,
		// the per-operation results are not kept.
		return resp
	}
	ops := plan.success
	if !r.Succeeded {
		ops = plan.failure
	}
	for i, o := range ops {
		var res raftstore.TxnOpResult
		if i < len(r.Ops) {
			res = r.Ops[i]
		}
		resp.Results = append(resp.Results, opResultPB(o, res, single, singleIndex, n.cfg.NodeID))
	}
	return resp
}

func opResultPB(o raftstore.TxnOp, res raftstore.TxnOpResult, rangeID, index uint64, node string) *kvpb.TxnOpResult {
	hdr := &kvpb.WriteHeader{ServedBy: node, RangeId: rangeID, Revision: index, SessionToken: sessionToken{rangeID: index}.String()}
	switch o.Kind {
	case raftstore.TxnPut:
		return &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Put{Put: &kvpb.PutResponse{Header: hdr}}}
	case raftstore.TxnDelete:
		return &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Delete{Delete: &kvpb.DeleteResponse{Header: hdr, Deleted: res.Found}}}
	case raftstore.TxnGet:
		g := &kvpb.GetResponse{Header: &kvpb.ReadHeader{ServedBy: node, RangeId: rangeID, AppliedIndex: index, Consistency: kvpb.Consistency_CONSISTENCY_LINEARIZABLE}}
		if res.Found {
			g.Kv = &kvpb.KeyValue{Key: res.KV.Key, Value: res.KV.Value, Revision: res.KV.Revision}
		}
		return &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Get{Get: g}}
	default:
		sc := &kvpb.ScanResponse{Header: &kvpb.ReadHeader{ServedBy: node, RangeId: rangeID, AppliedIndex: index, Consistency: kvpb.Consistency_CONSISTENCY_LINEARIZABLE}, More: res.More, NextKey: res.Next}
		for _, kv := range res.KVs {
			sc.Kvs = append(sc.Kvs, &kvpb.KeyValue{Key: kv.Key, Value: kv.Value, Revision: kv.Revision})
		}
		return &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Scan{Scan: sc}}
	}
}

// proposeMeeting proposes cmd on s (fwd when s is not the leader), and
// when a transaction's lock is in the way, deals with that transaction
// (resolves it once decided, aborts it once abandoned, else waits a
// little) and proposes again, until ctx ends.
func (n *Node) proposeMeeting(ctx context.Context, s *shard.Shard, cmd *raftstore.Command, lw *leaseWrite) (*raftstore.Result, bool, error) {
	for attempt := 0; ; attempt++ {
		res, fwd, err := n.proposeLeased(ctx, s, cmd, lw)
		var locked *raftstore.LockedError
		if fwd || !errors.As(err, &locked) {
			return res, fwd, err
		}
		if merr := n.meetLock(ctx, s, locked); merr != nil {
			return nil, false, merr
		}
		if attempt > 0 {
			if err := sleepCtx(ctx, time.Duration(min(attempt, 10))*10*time.Millisecond); err != nil {
				return nil, false, fmt.Errorf("%w: key %q is held by transaction %s: %w", shard.ErrIndeterminate, locked.Key, locked.Txn, err)
			}
		}
	}
}

// meetLock deals with the transaction holding a lock in range s: resolves
// it there if it has decided, aborts it if it was abandoned. A young
// undecided one is left alone (the caller waits).
func (n *Node) meetLock(ctx context.Context, s *shard.Shard, locked *raftstore.LockedError) error {
	l, ok := s.FSM().LockOf(locked.Key)
	if !ok {
		return nil // resolved meanwhile
	}
	young := time.Since(time.UnixMilli(l.At)) < txnAbandonAfter
	_, err := n.settleTxn(ctx, l.Txn, !young)
	return err
}

// settleTxn finds what became of an attempt (id#attempt) whose locks are
// still somewhere and, when it has decided (or abort is set and it has
// not: then it aborts it), applies the decision in the ranges of this
// node's replicas that hold its locks. It returns the decision, or
// TxnPending.
func (n *Node) settleTxn(ctx context.Context, name string, abort bool) (raftstore.TxnState, error) {
	id, attempt := splitAttempt(name)
	rec, err := n.readTxnRecord(ctx, id)
	if err != nil {
		return raftstore.TxnPending, err
	}
	decided := rec != nil && (rec.state == raftstore.TxnCommitted || rec.state == raftstore.TxnAborted && rec.attempt >= attempt)
	if !decided && !abort {
		return raftstore.TxnPending, nil
	}
	if !decided {
		// Abandoned: abort this attempt, unless it just committed.
		want := txnRecord{state: raftstore.TxnAborted, attempt: attempt}
		rec, err = n.swapTxnRecord(ctx, id, rec, want)
		if err != nil {
			return raftstore.TxnPending, err
		}
	}
	commit := rec.state == raftstore.TxnCommitted && rec.attempt == attempt
	d := &raftstore.TxnDecision{ID: name, Commit: commit, Succeeded: rec.succeeded}
	n.resolveEverywhere(ctx, d)
	if commit {
		return raftstore.TxnCommitted, nil
	}
	return raftstore.TxnAborted, nil
}

// resolveEverywhere applies a decision in every range holding its
// attempt's locks, as far as this node can find them: its own replicas'
// ranges, through their leaders.
func (n *Node) resolveEverywhere(ctx context.Context, d *raftstore.TxnDecision) {
	cmd := &raftstore.Command{Op: raftstore.OpTxnResolve, Value: d.Encode()}
	for _, s := range n.Shards() {
		if s.ID() == raftstore.MetaRangeID || !holdsLocksOf(s, d.ID) {
			continue
		}
		if _, err := n.proposeIn(ctx, s.ID(), s.Descriptor().Start, cmd); err != nil {
			n.log.Info("transaction locks left to the resolver", "txn", d.ID, "range", s.ID(), "err", err)
		}
	}
}

func holdsLocksOf(s *shard.Shard, name string) bool {
	for _, l := range s.FSM().Locks() {
		if l.Txn == name {
			return true
		}
	}
	return false
}

// RangePropose commits an encoded command in a range this node holds, on
// its leader (Internal.RangePropose).
func (n *Node) RangePropose(ctx context.Context, req *kvpb.RangeProposeRequest) (*kvpb.RangeProposeResponse, error) {
	s := n.shardByID(req.RangeId)
	if s == nil {
		return nil, fmt.Errorf("%w: range %d has no replica on %s", ErrUnknownRange, req.RangeId, n.cfg.NodeID)
	}
	cmd, err := raftstore.DecodeCommand(req.Command)
	if err != nil {
		return nil, err
	}
	switch cmd.Op {
	case raftstore.OpTxnPrepare, raftstore.OpTxnResolve, raftstore.OpTxnFence:
	default:
		return nil, fmt.Errorf("replication: RangePropose takes transaction commands only, not op %d", cmd.Op)
	}
	for attempt := 0; ; attempt++ {
		res, fwd, err := n.propose(ctx, s, &cmd)
		if fwd {
			resp, err := forward(ctx, n, s, true, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.RangeProposeResponse, error) {
				return kvpb.NewInternalClient(cc).RangePropose(ctx, req)
			})
			if errors.Is(err, errLeaderIsSelf) && attempt < 3 {
				continue // this replica won an election meanwhile: propose here
			}
			return resp, err
		}
		if err != nil && res == nil {
			return nil, err
		}
		return &kvpb.RangeProposeResponse{Result: raftstore.EncodeResult(res)}, nil
	}
}

// readTxnRecord reads a transaction's record from the meta range (nil:
// none), linearizably.
func (n *Node) readTxnRecord(ctx context.Context, id string) (*txnRecord, error) {
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: txnKey(id)})
	if err != nil {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) == string(txnKey(id)) {
			rec, ok := decodeTxnRecord(kv.Value)
			if !ok {
				return nil, fmt.Errorf("replication: transaction %s: undecodable record", id)
			}
			return &rec, nil
		}
	}
	return nil, nil
}

// swapTxnRecord swaps a transaction's record from old (nil: missing) to
// want and returns the record as it is after: want, or what beat it.
func (n *Node) swapTxnRecord(ctx context.Context, id string, old *txnRecord, want txnRecord) (*txnRecord, error) {
	want.at = time.Now().UnixMilli()
	req := &kvpb.MetaSwapRequest{Key: txnKey(id), Value: want.encode(), ExpectMissing: old == nil}
	if old != nil {
		req.Expected = old.encode()
	}
	resp, err := n.MetaSwap(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.Swapped {
		return &want, nil
	}
	if !resp.Exists {
		return nil, fmt.Errorf("replication: transaction %s: record vanished during a swap", id)
	}
	rec, ok := decodeTxnRecord(resp.Current)
	if !ok {
		return nil, fmt.Errorf("replication: transaction %s: undecodable record", id)
	}
	return &rec, nil
}

// MetaSwap is a compare-and-swap of one meta key (Internal.MetaSwap).
func (n *Node) MetaSwap(ctx context.Context, req *kvpb.MetaSwapRequest) (*kvpb.MetaSwapResponse, error) {
	return metaDo(ctx, n, func(s *shard.Shard) (*kvpb.MetaSwapResponse, error) {
		if req.Delete {
			// Only for forgetting decided records, which nothing writes
			// again: read, compare, delete is enough.
			if _, err := s.ReadIndex(ctx); err != nil {
				return nil, err
			}
			v, _, found, _, err := s.FSM().Get(req.Key)
			if err != nil {
				return nil, err
			}
			if !found || !bytes.Equal(v, req.Expected) {
				return &kvpb.MetaSwapResponse{Current: v, Exists: found}, nil
			}
			if _, err := s.Propose(ctx, &raftstore.Command{Op: raftstore.OpDelete, Key: req.Key}); err != nil {
				return nil, err
			}
			return &kvpb.MetaSwapResponse{Swapped: true}, nil
		}
		cmd := &raftstore.Command{Op: raftstore.OpCompareAndSwap, Key: req.Key, Value: req.Value, Expected: req.Expected, ExpectMissing: req.ExpectMissing}
		_, err := s.Propose(ctx, cmd)
		if err == nil {
			return &kvpb.MetaSwapResponse{Swapped: true}, nil
		}
		if !errors.Is(err, shard.ErrCompareFailed) {
			return nil, err
		}
		v, _, found, _, gerr := s.FSM().Get(req.Key)
		if gerr != nil {
			return nil, gerr
		}
		return &kvpb.MetaSwapResponse{Current: v, Exists: found}, nil
	}, func(ctx context.Context, c kvpb.InternalClient) (*kvpb.MetaSwapResponse, error) {
		return c.MetaSwap(ctx, req)
	})
}

// txnPartOf collects one range's share of a cross-range transaction.
type txnPartOf struct {
	rangeID uint64
	route   []byte // a key of the range, to route by
	part    raftstore.TxnPart
	// readIdx maps each read's key to its place in part.Reads.
	readIdx map[string]int
}

// txnAcross runs one attempt of a cross-range transaction.
func (n *Node) txnAcross(ctx context.Context, plan *txnPlan, t *kvpb.RangesResponse, attempt uint64) (*kvpb.TxnResponse, error) {
	name := attemptName(plan.id, attempt)
	parts := map[uint64]*txnPartOf{}
	partOf := func(k []byte) *txnPartOf {
		d := rangeOf(t, k)
		p := parts[d.Id]
		if p == nil {
			p = &txnPartOf{rangeID: d.Id, route: k, part: raftstore.TxnPart{ID: name}, readIdx: map[string]int{}}
			parts[d.Id] = p
		}
		return p
	}
	read := func(k []byte) {
		p := partOf(k)
		if _, ok := p.readIdx[string(k)]; !ok {
			p.readIdx[string(k)] = len(p.part.Reads)
			p.part.Reads = append(p.part.Reads, k)
		}
	}
	for _, c := range plan.compares {
		p := partOf(c.Key)
		p.part.Compares = append(p.part.Compares, c)
	}
	for b, ops := range [][]raftstore.TxnOp{plan.success, plan.failure} {
		for _, o := range ops {
			switch o.Kind {
			case raftstore.TxnScan:
				return nil, fmt.Errorf("%w: a scan in a transaction whose keys span ranges", ErrCrossRange)
			case raftstore.TxnGet, raftstore.TxnDelete:
				read(o.Key) // a delete reports whether the key existed
			}
			if o.Kind == raftstore.TxnPut || o.Kind == raftstore.TxnDelete {
				p := partOf(o.Key)
				if b == 0 {
					p.part.Success = append(p.part.Success, o)
				} else {
					p.part.Failure = append(p.part.Failure, o)
				}
			}
		}
	}
	// 1. Prepare everywhere.
	type prepared struct {
		p   *txnPartOf
		res *raftstore.TxnResult
		err error
	}
	results := make(chan prepared, len(parts))
	for _, p := range parts {
		go func() {
			res, err := n.prepareRange(ctx, p)
			results <- prepared{p, res, err}
		}()
	}
	reads := map[string]raftstore.TxnOpResult{}
	succeeded := true
	var firstErr error
	for range parts {
		r := <-results
		if r.err != nil {
			if firstErr == nil || errors.Is(firstErr, errTxnRetry) {
				firstErr = r.err
			}
			continue
		}
		succeeded = succeeded && r.res.Succeeded
		for k, i := range r.p.readIdx {
			if i < len(r.res.Ops) {
				reads[k] = r.res.Ops[i]
			}
		}
	}
	if firstErr == nil {
		// The leases again, now that every lock is in place: a revoke
		// committed before this finds the lease ended here; one after
		// it finds the locks, which keep it from vouching for their
		// ranges until they resolve (leaseWrites).
		firstErr = n.checkLeasesForPut(ctx, plan.leases())
	}
	if firstErr != nil {
		// Undo: no record was written, so nothing can commit this
		// attempt but this coordinator; drop its locks and report.
		n.abortAttempt(plan.id, name, parts)
		return nil, firstErr
	}
	// 2. Decide.
	rec, err := n.readTxnRecord(ctx, plan.id)
	if err != nil {
		n.abortAttempt(plan.id, name, parts)
		return nil, err
	}
	if rec != nil && (rec.state == raftstore.TxnCommitted || rec.attempt >= attempt) {
		// Someone aborted this attempt as abandoned (or an earlier one
		// committed?): it cannot commit.
		n.abortAttempt(plan.id, name, parts)
		if rec.state == raftstore.TxnCommitted {
			return nil, fmt.Errorf("%w: transaction %s has committed already (ask TxnStatus for its outcome)", ErrTxnIDUsed, plan.id)
		}
		return nil, errTxnRetry
	}
	after, err := n.swapTxnRecord(ctx, plan.id, rec, txnRecord{state: raftstore.TxnCommitted, attempt: attempt, succeeded: succeeded})
	if err != nil {
		// The swap's outcome is unknown: the locks stay for the
		// resolver, which finds the record either way.
		return nil, fmt.Errorf("%w: deciding transaction %s: %w", shard.ErrIndeterminate, plan.id, err)
	}
	if after.state != raftstore.TxnCommitted || after.attempt != attempt {
		n.abortAttempt(plan.id, name, parts)
		return nil, errTxnRetry
	}
	// 3. Resolve everywhere; the transaction is committed whatever
	// happens here (a range that fails is resolved by its resolver or the
	// next reader).
	d := &raftstore.TxnDecision{ID: name, Commit: true, Succeeded: succeeded}
	index := map[uint64]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx, err := n.resolveRange(ctx, p, d)
			if err != nil {
				n.log.Info("committed transaction's range left to its resolver", "txn", name, "range", p.rangeID, "err", err)
				return
			}
			mu.Lock()
			index[p.rangeID] = idx
			mu.Unlock()
		}()
	}
	wg.Wait()
	return n.acrossResponse(plan, succeeded, reads, parts, index), nil
}

// acrossResponse answers a committed cross-range transaction.
func (n *Node) acrossResponse(plan *txnPlan, succeeded bool, reads map[string]raftstore.TxnOpResult, parts map[uint64]*txnPartOf, index map[uint64]uint64) *kvpb.TxnResponse {
	resp := n.txnResponse(plan, &raftstore.TxnResult{Succeeded: succeeded}, index, 0, 0)
	ops := plan.success
	if !succeeded {
		ops = plan.failure
	}
	rangeOfKey := map[string]uint64{}
	for id, p := range parts {
		for _, c := range p.part.Compares {
			rangeOfKey[string(c.Key)] = id
		}
		for _, k := range p.part.Reads {
			rangeOfKey[string(k)] = id
		}
		for _, o := range append(p.part.Success, p.part.Failure...) {
			rangeOfKey[string(o.Key)] = id
		}
	}
	// A get sees the branch's earlier writes to its key, as in one range.
	written := map[string]*raftstore.TxnOpResult{}
	resp.Results = nil
	for _, o := range ops {
		id := rangeOfKey[string(o.Key)]
		var res raftstore.TxnOpResult
		switch o.Kind {
		case raftstore.TxnGet:
			if w, ok := written[string(o.Key)]; ok {
				res = *w
			} else {
				res = reads[string(o.Key)]
			}
		case raftstore.TxnDelete:
			if w, ok := written[string(o.Key)]; ok {
				res.Found = w.Found
			} else {
				res.Found = reads[string(o.Key)].Found
			}
			written[string(o.Key)] = &raftstore.TxnOpResult{Kind: raftstore.TxnGet}
		case raftstore.TxnPut:
			written[string(o.Key)] = &raftstore.TxnOpResult{Kind: raftstore.TxnGet, Found: true, KV: raftstore.KV{Key: o.Key, Value: o.Value, Revision: index[id]}}
		}
		resp.Results = append(resp.Results, opResultPB(o, res, id, index[id], n.cfg.NodeID))
	}
	return resp
}

// prepareRange proposes a part's prepare on its range's leader. A lock of
// another transaction in the way: an abandoned one is aborted and the
// prepare tried again; a live one makes this attempt give way
// (errTxnRetry).
func (n *Node) prepareRange(ctx context.Context, p *txnPartOf) (*raftstore.TxnResult, error) {
	cmd := &raftstore.Command{Op: raftstore.OpTxnPrepare, Value: p.part.Encode()}
	for tries := 0; tries < 3; tries++ {
		res, err := n.proposeIn(ctx, p.rangeID, p.route, cmd)
		var locked *raftstore.LockedError
		// proposeIn carries the lock's holder back typed, from whichever
		// node proposed it (raftstore.DecodeResult).
		if errors.As(err, &locked) {
			if s := n.shardByID(p.rangeID); s != nil {
				if l, ok := s.FSM().LockOf(locked.Key); ok && time.Since(time.UnixMilli(l.At)) >= txnAbandonAfter {
					if _, serr := n.settleTxn(ctx, l.Txn, true); serr == nil {
						continue
					}
				}
			}
			return nil, errTxnRetry
		}
		if err != nil {
			return nil, err
		}
		if res.Txn == nil {
			return nil, fmt.Errorf("replication: range %d answered a prepare without its result", p.rangeID)
		}
		return res.Txn, nil
	}
	return nil, errTxnRetry
}

// resolveRange applies a decision in one part's range.
func (n *Node) resolveRange(ctx context.Context, p *txnPartOf, d *raftstore.TxnDecision) (uint64, error) {
	res, err := n.proposeIn(ctx, p.rangeID, p.route, &raftstore.Command{Op: raftstore.OpTxnResolve, Value: d.Encode()})
	if err != nil {
		return 0, err
	}
	return res.Revision, nil
}

// abortAttempt drops an undecided attempt's locks everywhere it may have
// taken them, in the background: the caller's answer does not wait.
func (n *Node) abortAttempt(id, name string, parts map[uint64]*txnPartOf) {
	d := &raftstore.TxnDecision{ID: name}
	go func() {
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		for _, p := range parts {
			if _, err := n.resolveRange(ctx, p, d); err != nil {
				n.log.Info("aborted transaction's locks left to the resolver", "txn", name, "range", p.rangeID, "err", err)
			}
		}
	}()
}

// proposeIn commits cmd in range id on its leader, wherever that is: from
// this node's replica (forwarding to the leader) or through a node that
// holds key's range (Internal.RangePropose carries the command and its
// result, errors included, so that a lock in the way is known as one).
func (n *Node) proposeIn(ctx context.Context, id uint64, key []byte, cmd *raftstore.Command) (*raftstore.Result, error) {
	payload := cmd.Encode(nil)
	resp, err := route(ctx, n, key, func(s *shard.Shard) (*kvpb.RangeProposeResponse, error) {
		if s.ID() != id {
			return nil, raftstore.ErrWrongRange
		}
		res, fwd, err := n.propose(ctx, s, cmd)
		if fwd {
			return forward(ctx, n, s, true, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.RangeProposeResponse, error) {
				return kvpb.NewInternalClient(cc).RangePropose(ctx, &kvpb.RangeProposeRequest{RangeId: id, Command: payload})
			})
		}
		if err != nil && res == nil {
			return nil, err
		}
		return &kvpb.RangeProposeResponse{Result: raftstore.EncodeResult(res)}, nil
	}, func(ctx context.Context, cc grpc.ClientConnInterface) (*kvpb.RangeProposeResponse, error) {
		return kvpb.NewInternalClient(cc).RangePropose(ctx, &kvpb.RangeProposeRequest{RangeId: id, Command: payload})
	})
	if err != nil {
		return nil, err
	}
	res, err := raftstore.DecodeResult(resp.Result)
	if err != nil {
		return nil, err
	}
	return res, res.Err
}

// TxnStatus tells what became of a transaction: COMMITTED (and whether its
// compares held), ABORTED, or PENDING. With abort_if_pending, a pending
// one is aborted first, so the answer is final.
func (n *Node) TxnStatus(ctx context.Context, req *kvpb.TxnStatusRequest) (*kvpb.TxnStatusResponse, error) {
	resp := &kvpb.TxnStatusResponse{Id: req.Id}
	// Across ranges: the record decides.
	rec, err := n.readTxnRecord(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if rec != nil && rec.state == raftstore.TxnCommitted {
		resp.State, resp.Succeeded = kvpb.TxnState_TXN_STATE_COMMITTED, rec.succeeded
		return resp, nil
	}
	// In one range: that range's outcome, fenced when asked to decide.
	if len(req.Key) > 0 {
		op := raftstore.OpTxnFence
		d := &raftstore.TxnDecision{ID: req.Id}
		var o *raftstore.TxnOutcome
		if req.AbortIfPending {
			res, err := n.proposeInRangeOf(ctx, req.Key, &raftstore.Command{Op: op, Value: d.Encode()})
			if err != nil {
				return nil, err
			}
			if res.Txn != nil {
				o = res.Txn.Outcome
			}
		} else if got, err := n.outcomeAt(ctx, req.Key, req.Id); err != nil {
			return nil, err
		} else {
			o = got
		}
		if o != nil && o.State == raftstore.TxnCommitted {
			resp.State, resp.Succeeded = kvpb.TxnState_TXN_STATE_COMMITTED, o.Succeeded
			return resp, nil
		}
		if o != nil && rec == nil && req.AbortIfPending {
			// Fenced in its range; abort a cross-range attempt too, below.
			resp.State = kvpb.TxnState_TXN_STATE_ABORTED
		}
	}
	if req.AbortIfPending {
		after, err := n.swapTxnRecord(ctx, req.Id, rec, txnRecord{state: raftstore.TxnAborted, attempt: math.MaxUint64})
		if err != nil {
			return nil, err
		}
		if after.state == raftstore.TxnCommitted {
			resp.State, resp.Succeeded = kvpb.TxnState_TXN_STATE_COMMITTED, after.succeeded
			return resp, nil
		}
		resp.State = kvpb.TxnState_TXN_STATE_ABORTED
		return resp, nil
	}
	if rec != nil && rec.state == raftstore.TxnAborted && rec.attempt == math.MaxUint64 {
		resp.State = kvpb.TxnState_TXN_STATE_ABORTED
		return resp, nil
	}
	resp.State = kvpb.TxnState_TXN_STATE_PENDING
	return resp, nil
}

// proposeInRangeOf commits a transaction command in the range holding key.
func (n *Node) proposeInRangeOf(ctx context.Context, key []byte, cmd *raftstore.Command) (*raftstore.Result, error) {
	for attempt := 0; attempt < 4; attempt++ {
		t, err := n.routes.get(ctx)
		if err != nil {
			return nil, err
		}
		d := rangeOf(t, key)
		if d == nil {
			return nil, fmt.Errorf("%w: no range holds key %q", ErrKeyOutOfRange, key)
		}
		res, err := n.proposeIn(ctx, d.Id, key, cmd)
		if errors.Is(err, raftstore.ErrWrongRange) || errors.Is(err, ErrKeyOutOfRange) {
			n.routes.invalidate()
			continue
		}
		return res, err
	}
	return nil, fmt.Errorf("%w: key %q kept moving between ranges", ErrKeyOutOfRange, key)
}

// outcomeAt reads, on the leader of key's range, what it recorded of a
// single-range transaction (a fence with nothing to fence is not what is
// wanted here: a read-index read of the outcome is).
func (n *Node) outcomeAt(ctx context.Context, key []byte, id string) (*raftstore.TxnOutcome, error) {
	type answer struct{ o *raftstore.TxnOutcome }
	a, err := route(ctx, n, key, func(s *shard.Shard) (answer, error) {
		if !s.IsLeader() {
			return answer{}, errNeedLeader
		}
		if _, err := s.ReadIndex(ctx); err != nil {
			return answer{}, err
		}
		if o, ok := s.FSM().Outcome(id); ok {
			return answer{&o}, nil
		}
		return answer{}, nil
	}, func(context.Context, grpc.ClientConnInterface) (answer, error) { return answer{}, errNeedLeader })
	if errors.Is(err, errNeedLeader) {
		// Not the leader here: a fence-free answer needs the leader; say
		// pending, which a later ask with abort_if_pending settles.
		return nil, nil
	}
	return a.o, err
}

var errNeedLeader = errors.New("replication: needs the range's leader")

// resolverLoop settles, in the ranges this node leads, locks older than
// txnAbandonAfter: resolved when their transaction has decided, aborted
// when it has not. Once a minute it also forgets what is no longer
// needed (forgetTxns).
func (n *Node) resolverLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(txnResolveEvery)
	defer tick.Stop()
	lastForget := time.Now()
	samples := map[uint64][]indexSample{}
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if time.Since(lastForget) >= txnForgetEvery {
			lastForget = time.Now()
			n.forgetTxns(samples)
		}
		for _, s := range n.Shards() {
			if s.ID() == raftstore.MetaRangeID || !s.IsLeader() {
				continue
			}
			names := map[string]bool{}
			for _, l := range s.FSM().Locks() {
				if time.Since(time.UnixMilli(l.At)) >= txnAbandonAfter {
					names[l.Txn] = true
				}
			}
			for name := range names {
				ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
				if _, err := n.settleTxn(ctx, name, true); err != nil {
					n.log.Info("abandoned transaction not settled yet", "txn", name, "range", s.ID(), "err", err)
				}
				cancel()
			}
		}
	}
}

// resolveCommittedIn makes a linearizable read of [start, end) in range s
// see every transaction committed before it: a lock there whose
// transaction has committed is resolved first. An undecided one is left:
// the read linearizes before its commit.
func (n *Node) resolveCommittedIn(ctx context.Context, s *shard.Shard, start, end []byte) error {
	locks := s.FSM().LocksIn(start, end)
	if len(locks) == 0 {
		return nil
	}
	names := map[string]bool{}
	for _, l := range locks {
		if l.Success.Kind != raftstore.TxnNone || l.Failure.Kind != raftstore.TxnNone {
			names[l.Txn] = true
		}
	}
	for name := range names {
		if _, err := n.settleTxn(ctx, name, false); err != nil {
			return err
		}
	}
	return nil
}

// indexSample is a range's applied index at a time: what "the index ten
// minutes ago" is, for forgetting outcomes by index (which every replica
// agrees on) rather than by time (which they do not).
type indexSample struct {
	at    time.Time
	index uint64
}

// forgetTxns drops, on the meta leader, decided records older than
// txnKeep whose locks no node holds any more, and in each range this node
// leads, outcomes recorded before the index it had txnKeep ago.
func (n *Node) forgetTxns(samples map[uint64][]indexSample) {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	now := time.Now()
	for _, s := range n.Shards() {
		if s.ID() == raftstore.MetaRangeID || !s.IsLeader() {
			delete(samples, s.ID())
			continue
		}
		h := append(samples[s.ID()], indexSample{now, s.FSM().AppliedIndex()})
		var before uint64
		for len(h) > 1 && now.Sub(h[1].at) >= txnKeep {
			h = h[1:]
		}
		if now.Sub(h[0].at) >= txnKeep {
			before = h[0].index
		}
		samples[s.ID()] = h
		if oldest := s.FSM().OldestOutcome(); before == 0 || oldest == 0 || oldest >= before {
			continue
		}
		cmd := &raftstore.Command{Op: raftstore.OpTxnForget, Value: binary.BigEndian.AppendUint64(nil, before)}
		if _, _, err := n.propose(ctx, s, cmd); err != nil {
			n.log.Info("old transaction outcomes kept for now", "range", s.ID(), "err", err)
		}
	}
	if n.localMetaLeader() == nil {
		return
	}
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte(metaTxnPrefix)})
	if err != nil {
		return
	}
	old := map[string][]byte{}
	for _, kv := range resp.Kvs {
		rec, ok := decodeTxnRecord(kv.Value)
		if ok && rec.state != raftstore.TxnPending && now.Sub(time.UnixMilli(rec.at)) >= txnKeep {
			old[string(kv.Key[len(metaTxnPrefix):])] = kv.Value
			if len(old) >= 10000 {
				break
			}
		}
	}
	if len(old) == 0 {
		return
	}
	held, err := n.txnLocksAnywhere(ctx, slices.Collect(maps.Keys(old)))
	if err != nil {
		return // a node did not answer: forget nothing this time
	}
	for id, v := range old {
		if held[id] {
			continue
		}
		if _, err := n.MetaSwap(ctx, &kvpb.MetaSwapRequest{Key: txnKey(id), Expected: v, Delete: true}); err != nil {
			return
		}
	}
}

// txnLocksAnywhere asks every node which of the transactions hold locks
// in its replicas; any node not answering is an error.
func (n *Node) txnLocksAnywhere(ctx context.Context, ids []string) (map[string]bool, error) {
	t, err := n.routes.get(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	req := &kvpb.TxnLocksRequest{Ids: ids}
	for _, node := range t.Nodes {
		if node.State == NodeRemoved {
			continue
		}
		var resp *kvpb.TxnLocksResponse
		if node.Id == n.cfg.NodeID {
			resp, err = n.TxnLocks(ctx, req)
		} else if conn, cerr := n.peer(node.RaftAddr); cerr != nil {
			err = cerr
		} else {
			resp, err = kvpb.NewInternalClient(conn).TxnLocks(ctx, req)
		}
		if err != nil {
			return nil, err
		}
		for _, id := range resp.Held {
			held[id] = true
		}
	}
	return held, nil
}

// TxnLocks says which of the named transactions hold locks in this
// node's replicas (Internal.TxnLocks).
func (n *Node) TxnLocks(_ context.Context, req *kvpb.TxnLocksRequest) (*kvpb.TxnLocksResponse, error) {
	want := map[string]bool{}
	for _, id := range req.Ids {
		want[id] = true
	}
	found := map[string]bool{}
	for _, s := range n.Shards() {
		for _, l := range s.FSM().Locks() {
			if id, _ := splitAttempt(l.Txn); want[id] {
				found[id] = true
			}
		}
	}
	return &kvpb.TxnLocksResponse{Held: slices.Sorted(maps.Keys(found))}, nil
}
