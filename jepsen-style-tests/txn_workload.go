package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// What the bank and append workloads share: sending a transaction with a
// client-chosen id, learning an unknown outcome through TxnStatus, the
// final resolution of what stayed unknown, and the kill-coordinator
// nemesis, which kills the node coordinating a cross-range transaction
// while it is in flight.

// Operation kinds of the transaction workloads.
const (
	// OpTxnStatus: after the heal, TxnStatus(TxnID, Key,
	// abort_if_pending) on a transaction whose outcome stayed unknown;
	// Value is the final state (COMMITTED or ABORTED), Succeeded whether
	// its compares held. Fail: no node answered.
	OpTxnStatus = "txn-status"
	// OpTxnProbe: the kill-coordinator nemesis reading the keys of the
	// transaction it cut, from the kill (Start) until a read-only
	// transaction of them went through (End): how long its locks held.
	// Fail: not within probeLimit.
	OpTxnProbe = "txn-probe"
)

// Transaction states as recorded (Op.Resolved, OpTxnStatus's Value).
const (
	TxnCommitted = "COMMITTED"
	TxnAborted   = "ABORTED"
)

// TxnSetupProcess writes the bank's initial balances; KillCoordProcess
// sends the kill-coordinator nemesis's transactions. Like the nemesis's,
// their ops stay out of the availability tables.
const (
	TxnSetupProcess  = -3
	KillCoordProcess = -300
)

// txnID names a transaction uniquely across the workloads' clients.
func txnID(workload string, proc, seq int) string {
	return fmt.Sprintf("%s-p%d-%d", workload, proc, seq)
}

// sendTxn sends req to exactly node and classifies the answer: ok, fail
// (provably not applied, or a read-only transaction that errored) or info.
// The op carries the node, the id and the error; the caller fills in the
// rest.
func (cs *Conns) sendTxn(ctx context.Context, node int, req *kvpb.TxnRequest, writes bool, timeout time.Duration) (*kvpb.TxnResponse, Op) {
	op := Op{Node: cs.ids[node], API: APIGRPC, TxnID: req.GetId()}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var p peer.Peer
	resp, err := cs.kv[node].Txn(ctx, req, grpc.Peer(&p))
	if err == nil {
		op.Type, op.Succeeded = OK, resp.GetSucceeded()
		if hs := resp.GetHeaders(); len(hs) > 0 {
			op.ServedBy = hs[0].GetServedBy()
		}
		return resp, op
	}
	st, _ := status.FromError(err)
	reason := rpctypes.ReasonOf(err)
	op.Type = classify(writes, reason, rpctypes.NeverSent(err, &p))
	op.Error = fmt.Sprintf("%v %s: %s", st.Code(), reason, truncate(st.Message(), 160))
	return nil, op
}

// getReads maps the get results of a transaction's branch (the first n
// results answer gets of keys, in order) to key -> value ("" missing).
func getReads(resp *kvpb.TxnResponse, keys []string) (map[string]string, error) {
	res := resp.GetResults()
	if len(res) < len(keys) {
		return nil, fmt.Errorf("jepsen: transaction %s answered %d results for %d gets", resp.GetId(), len(res), len(keys))
	}
	out := make(map[string]string, len(keys))
	for i, k := range keys {
		g := res[i].GetGet()
		if g == nil {
			return nil, fmt.Errorf("jepsen: transaction %s: result %d is not a get", resp.GetId(), i)
		}
		if kv := g.GetKv(); kv != nil {
			if string(kv.GetKey()) != k {
				return nil, fmt.Errorf("jepsen: transaction %s: get %d answered key %q, not %q", resp.GetId(), i, kv.GetKey(), k)
			}
			out[k] = string(kv.GetValue())
		} else {
			out[k] = ""
		}
	}
	return out, nil
}

func txnGets(keys []string) []*kvpb.TxnOp {
	out := make([]*kvpb.TxnOp, 0, len(keys))
	for _, k := range keys {
		out = append(out, &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}})
	}
	return out
}

func txnPut(key, value string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

// compareValue is "key holds value", or "key is missing" for "".
func compareValue(key, value string) *kvpb.Compare {
	if value == "" {
		return &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_TARGET_EXISTS, Result: kvpb.Compare_RESULT_EQUAL, Exists: false}
	}
	return &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_EQUAL, Value: []byte(value)}
}

// readKeys reads keys in one read-only transaction through node.
func (cs *Conns) readKeys(ctx context.Context, node int, id string, keys []string, timeout time.Duration) (map[string]string, Op) {
	resp, op := cs.sendTxn(ctx, node, &kvpb.TxnRequest{Id: id, Success: txnGets(keys)}, false, timeout)
	if op.Type != OK {
		return nil, op
	}
	reads, err := getReads(resp, keys)
	if err != nil {
		op.Type, op.Error = Fail, err.Error()
		return nil, op
	}
	op.Reads = reads
	return reads, op
}

// resolveTxn asks TxnStatus(id, key, abort_if_pending) through the nodes
// in turn, starting at first, until one answers or within passed: the
// final state (TxnCommitted, TxnAborted) and whether the compares held.
func (cs *Conns) resolveTxn(ctx context.Context, id, key string, first int, within time.Duration) (string, bool, error) {
	deadline := time.Now().Add(within)
	var last error
	for a := 0; time.Now().Before(deadline) && ctx.Err() == nil; a++ {
		node := (first + a) % len(cs.kv)
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := cs.kv[node].TxnStatus(cctx, &kvpb.TxnStatusRequest{Id: id, Key: []byte(key), AbortIfPending: true})
		cancel()
		if err == nil {
			switch resp.GetState() {
			case kvpb.TxnState_TXN_STATE_COMMITTED:
				return TxnCommitted, resp.GetSucceeded(), nil
			case kvpb.TxnState_TXN_STATE_ABORTED:
				return TxnAborted, false, nil
			}
			err = fmt.Errorf("TxnStatus with abort_if_pending answered %v", resp.GetState())
		}
		last = fmt.Errorf("via %s: %w", cs.ids[node], err)
		sleepCtx(ctx, 100*time.Millisecond)
	}
	if last == nil {
		last = errors.New("no attempt")
	}
	return "", false, fmt.Errorf("jepsen: resolving transaction %s: %w", id, last)
}

// settle learns the outcome of a writing transaction whose answer was
// lost (op is info), as a client does: TxnStatus with abort_if_pending,
// for up to 3 s. A committed one becomes ok (its reads lost), an aborted
// one fail, both ending when TxnStatus answered; otherwise op stays info.
func (cs *Conns) settle(ctx context.Context, rec *Recorder, op *Op, key string, node int) {
	if op.Type != Info || op.TxnID == "" {
		return
	}
	state, ok, err := cs.resolveTxn(ctx, op.TxnID, key, node+1, 3*time.Second)
	if err != nil {
		op.Error += "; " + truncate(err.Error(), 160)
		return
	}
	op.End, op.Resolved = rec.Now(), state
	if state == TxnCommitted {
		op.Type, op.Succeeded, op.Reads = OK, ok, nil
		return
	}
	op.Type = Fail
}

// txnKeys are the keys a request compares or writes, sorted.
func txnKeys(req *kvpb.TxnRequest) []string {
	seen := map[string]bool{}
	for _, c := range req.GetCompares() {
		seen[string(c.GetKey())] = true
	}
	for _, o := range req.GetSuccess() {
		if p := o.GetPut(); p != nil {
			seen[string(p.GetKey())] = true
		}
	}
	return sortedKeys(seen)
}

// resolveUnknown, after the heal, settles every writing transaction whose
// outcome is still unknown (TxnStatus with abort_if_pending, up to 5 s
// each), recording the answers as OpTxnStatus ops.
func resolveUnknown(ctx context.Context, cs *Conns, rec *Recorder, logf func(string, ...any)) {
	var todo []Op
	for _, o := range rec.History().Ops {
		if o.Type == Info && o.TxnID != "" && len(o.Writes) > 0 {
			todo = append(todo, o)
		}
	}
	counts := map[string]int{}
	for i, o := range todo {
		key := o.Key
		if key == "" {
			key = sortedKeys(o.Writes)[0]
		}
		start := rec.Now()
		state, ok, err := cs.resolveTxn(ctx, o.TxnID, key, i, 5*time.Second)
		st := Op{Process: FinalProcess, F: OpTxnStatus, Key: key, TxnID: o.TxnID, API: APIGRPC, Start: start, End: rec.Now(), Type: OK, Value: state, Succeeded: ok}
		if err != nil {
			st.Type, st.Error, state = Fail, truncate(err.Error(), 200), "unanswered"
		}
		rec.Add(st)
		counts[state]++
	}
	logf("jepsen: %d transactions of unknown outcome resolved after the heal: %v", len(todo), counts)
}

// crossTxnSource makes a cross-range transaction of a workload for the
// kill-coordinator nemesis: the request (with its id) and the op to
// record (F, Key, Compared, Writes), its reads done through node.
type crossTxnSource interface {
	crossTxn(ctx context.Context, rng *rand.Rand, node int) (*kvpb.TxnRequest, Op, error)
}

// NemKillCoord kills, with kill -9, the node a cross-range transaction of
// the bank or append workload was just sent to, a few milliseconds into
// it, and restarts it when the fault ends.
const NemKillCoord = "kill-coordinator"

// probeLimit bounds the kill-coordinator nemesis's wait for the cut
// transaction's keys to be readable again.
const probeLimit = 30 * time.Second

// killCoordinator starts the kill-coordinator fault: the transaction, the
// kill a random 1-15 ms after it was sent, the op recorded (info unless
// the answer came first), and a probe of its keys in the background.
func (e *nemesisEnv) killCoordinator(f *activeFault, busy map[int]bool) error {
	if len(e.txns) == 0 {
		return errors.New("no transaction workload (bank or append) runs")
	}
	live := map[int]bool{}
	for _, i := range e.liveNodes() {
		live[i] = !busy[i]
	}
	var cands []int
	for i, ok := range live {
		if ok {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return errors.New("every node is busy")
	}
	sort.Ints(cands)
	x := cands[e.rng.IntN(len(cands))]
	src := e.txns[e.rng.IntN(len(e.txns))]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, op, err := src.crossTxn(ctx, e.rng, x)
	if err != nil {
		return err
	}
	busy[x] = true
	delay := time.Duration(1+e.rng.IntN(15)) * time.Millisecond
	start := e.rec.Now()
	done := make(chan Op, 1)
	go func() {
		_, o := e.cs.sendTxn(ctx, x, req, true, 5*time.Second)
		done <- o
	}()
	// The delay is the point of the fault (the kill lands mid-commit), not
	// a wait for an event.
	time.Sleep(delay)
	killed := e.rec.Now()
	kerr := e.c.Kill(x)
	res := <-done
	res.F, res.Key, res.Compared, res.Writes = op.F, op.Key, op.Compared, op.Writes
	res.Process, res.Start, res.End = KillCoordProcess, start, e.rec.Now()
	res.Error = strings.TrimSuffix("kill-coordinator: "+res.Error, ": ")
	e.rec.Add(res)
	if kerr != nil {
		delete(busy, x)
		return fmt.Errorf("kill %s: %w", e.c.ID(x), kerr)
	}
	f.desc = fmt.Sprintf("kill -9 %s %v into transaction %s (%s)", e.c.ID(x), delay, req.GetId(), res.Type)
	f.stop = func() error {
		defer delete(busy, x)
		if err := e.c.Restart(x); err != nil {
			return err
		}
		e.rec.Restarted(e.c.ID(x), "restart after kill-coordinator")
		return nil
	}
	e.probes.Go(func() { e.probeTxn(req, x, killed) })
	return nil
}

// probeTxn reads the keys of a transaction cut by kill-coordinator
// through the other nodes until a read-only transaction of them succeeds
// (its locks are gone: committed or rolled back) or probeLimit passes.
func (e *nemesisEnv) probeTxn(req *kvpb.TxnRequest, x int, killed int64) {
	keys := txnKeys(req)
	deadline := time.Now().Add(probeLimit)
	op := Op{Process: KillCoordProcess, F: OpTxnProbe, Key: keys[0], TxnID: req.GetId(), API: APIGRPC, Start: killed, Type: Fail}
	n := len(e.cs.kv)
	for a := 0; time.Now().Before(deadline); a++ {
		node := x // a cluster of one has no other node
		if n > 1 {
			node = (x + 1 + a%(n-1)) % n
		}
		reads, r := e.cs.readKeys(context.Background(), node, fmt.Sprintf("%s-probe-%d", req.GetId(), a), keys, 2*time.Second)
		if r.Type == OK {
			op.Type, op.Reads, op.Node, op.Error = OK, reads, r.Node, ""
			break
		}
		op.Error = r.Error
		time.Sleep(200 * time.Millisecond)
	}
	op.End = e.rec.Now()
	op.Value = fmtNanos(op.End - killed)
	e.rec.Add(op)
	e.logf("jepsen: kill-coordinator: keys of %s readable again %s after the kill (%s)", req.GetId(), op.Value, op.Type)
}

// txnFate is what became of a transaction op, with the resolutions of
// the history applied.
type txnFate struct {
	committed bool  // it happened (its compares held or not)
	unknown   bool  // maybe
	succeeded bool  // committed: its compares held, its writes applied
	end       int64 // committed: known to have happened by then
}

// txnStatuses maps transaction ids to their post-heal resolutions.
func txnStatuses(ix *index) map[string]*Op {
	out := map[string]*Op{}
	for _, o := range ix.ops {
		if o.F == OpTxnStatus && o.Type == OK {
			out[o.TxnID] = o
		}
	}
	return out
}

func fateOf(o *Op, statuses map[string]*Op) txnFate {
	switch o.Type {
	case OK:
		return txnFate{committed: true, succeeded: o.Succeeded, end: o.End}
	case Fail:
		return txnFate{}
	}
	if st := statuses[o.TxnID]; st != nil {
		if st.Value == TxnCommitted {
			return txnFate{committed: true, succeeded: st.Succeeded, end: st.End}
		}
		return txnFate{}
	}
	return txnFate{unknown: true}
}

// txnCounts summarises the outcomes of ops of kind f for the notes.
func txnCounts(ix *index, f string, statuses map[string]*Op) string {
	var ok, noCompare, fail, resolvedC, resolvedA, lateC, lateA, unknown int
	for _, o := range ix.ops {
		if o.F != f || o.Process == FinalProcess {
			continue
		}
		switch {
		case o.Type == OK && o.Resolved == TxnCommitted:
			resolvedC++
		case o.Type == Fail && o.Resolved == TxnAborted:
			resolvedA++
		case o.Type == OK && o.Succeeded:
			ok++
		case o.Type == OK:
			noCompare++
		case o.Type == Fail:
			fail++
		default:
			switch fate := fateOf(o, statuses); {
			case fate.unknown:
				unknown++
			case fate.committed:
				lateC++
			default:
				lateA++
			}
		}
	}
	return fmt.Sprintf("%s: %d committed, %d compares failed, %d failed, %d unknown resolved by the client (%d committed, %d aborted), %d after the heal (%d committed, %d aborted), %d never resolved",
		f, ok, noCompare, fail, resolvedC+resolvedA, resolvedC, resolvedA, lateC+lateA, lateC, lateA, unknown)
}

// probeNotes reports the kill-coordinator probes on keys with prefix and
// fails r for a probe that never got through while no other fault was
// active: the cut transaction's locks outlived its coordinator.
func probeNotes(ix *index, r *CheckResult, prefix string) {
	var worst int64
	n := 0
	for _, o := range ix.ops {
		if o.F != OpTxnProbe || !strings.HasPrefix(o.Key, prefix) {
			continue
		}
		n++
		if o.Type == OK {
			worst = max(worst, o.End-o.Start)
			continue
		}
		others := false
		for _, f := range ix.h.Faults {
			if f.Name != NemKillCoord && f.Start < o.End && o.Start < f.End {
				others = true
			}
		}
		if !others {
			r.fail(o.Key, fmt.Sprintf("the keys of transaction %s, cut by kill-coordinator, stayed unreadable for %v with no other fault: its locks outlived its coordinator", o.TxnID, probeLimit), o)
		}
	}
	if n > 0 {
		r.note("kill-coordinator: %d transactions cut; their keys readable again at most %s after the kill", n, fmtNanos(worst))
	}
}

// finalTxnRead reads keys in a read-only transaction through the nodes in
// turn until one succeeds or within passes, recording every attempt as an
// op of kind f by FinalProcess: after the heal, locks or pending
// transactions left behind would block it.
func finalTxnRead(ctx context.Context, cs *Conns, rec *Recorder, f string, keys []string, within time.Duration, logf func(string, ...any)) {
	start := time.Now()
	deadline := start.Add(within)
	for a := 0; time.Now().Before(deadline) && ctx.Err() == nil; a++ {
		t0 := rec.Now()
		reads, op := cs.readKeys(ctx, a%len(cs.kv), fmt.Sprintf("%s-final-%d", f, a), keys, 3*time.Second)
		op.F, op.Process, op.Start, op.End = f, FinalProcess, t0, rec.Now()
		rec.Add(op)
		if reads != nil {
			logf("jepsen: final %s of %d keys succeeded after %v (%d attempts)", f, len(keys), time.Since(start).Round(time.Millisecond), a+1)
			return
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	logf("jepsen: final %s of %d keys did not succeed within %v", f, len(keys), within)
}
