package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// WorkloadAppend: lists under AppendPrefix, one per range, which
// transactions append unique elements to and read (checker_append.go).
const WorkloadAppend = "append"

// AppendPrefix holds the append workload's lists, AppendPrefix+"<i>".
// (The register workload's lists are under ListPrefix, "l/".)
const AppendPrefix = "list/"

// OpListTxn is one transaction of the append workload: it appends Writes
// (list -> element) to lists whose values it compared (Compared, "" for a
// list not yet created) and reads lists (Reads, read before its own
// appends). Ok and not Succeeded: a compare failed, nothing was appended,
// the reads hold. The final read after the heal is one with Reads only.
const OpListTxn = "list-txn"

// AppendConfig shapes the append workload.
type AppendConfig struct {
	// Lists (default 6), each in a range of its own; Clients (default 4).
	Lists   int
	Clients int
}

func (a *AppendConfig) setDefaults() {
	if a.Lists == 0 {
		a.Lists = 6
	}
	if a.Clients == 0 {
		a.Clients = 4
	}
}

func appendKey(i int) string { return AppendPrefix + strconv.Itoa(i) }

// listSep separates a list's elements in its value.
const listSep = ","

// appendElems splits a list value into its elements.
func appendElems(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, listSep)
}

// lists is one run of the append workload.
type lists struct {
	cfg     AppendConfig
	keys    []string
	cs      *Conns
	rec     *Recorder
	timeout time.Duration
	think   time.Duration
	wg      sync.WaitGroup
}

func newLists(cfg AppendConfig, cs *Conns, timeout, think time.Duration) *lists {
	l := &lists{cfg: cfg, cs: cs, timeout: timeout, think: think}
	for i := range cfg.Lists {
		l.keys = append(l.keys, appendKey(i))
	}
	return l
}

// splitPoints give every list a range of its own, highest first.
func (l *lists) splitPoints() []string {
	out := slices.Clone(l.keys[1:])
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

func (l *lists) start(ctx context.Context, seed uint64, firstProc int) {
	for i := range l.cfg.Clients {
		proc := firstProc + i
		rng := rand.New(rand.NewPCG(seed, uint64(proc)+1))
		l.wg.Go(func() { l.client(ctx, proc, rng) })
	}
}

func (l *lists) wait() { l.wg.Wait() }

// pick returns 1-3 distinct lists, sorted.
func (l *lists) pick(rng *rand.Rand) []string {
	n := 1 + rng.IntN(min(3, len(l.keys)))
	perm := rng.Perm(len(l.keys))[:n]
	out := make([]string, 0, n)
	for _, i := range perm {
		out = append(out, l.keys[i])
	}
	slices.Sort(out)
	return out
}

func (l *lists) client(ctx context.Context, proc int, rng *rand.Rand) {
	for seq := 0; ctx.Err() == nil; seq++ {
		node := rng.IntN(len(l.cs.kv))
		id := txnID(WorkloadAppend, proc, seq)
		appendTo, readOf := l.pick(rng), l.pick(rng)
		req, op, err := l.build(ctx, node, id, appendTo, readOf, fmt.Sprintf("%d.%d", proc, seq))
		if err == nil {
			start := l.rec.Now()
			resp, res := l.cs.sendTxn(ctx, node, req, true, l.timeout)
			if res.Type == OK {
				reads, err := getReads(resp, readOf)
				if err != nil {
					res.Error = err.Error() // recorded ok, without reads
				}
				res.Reads = reads
			}
			l.cs.settle(ctx, l.rec, &res, op.Key, node)
			res.F, res.Key, res.Compared, res.Writes, res.Process, res.Start = op.F, op.Key, op.Compared, op.Writes, proc, start
			if res.Resolved == "" {
				res.End = l.rec.Now()
			}
			l.rec.Add(res)
		}
		sleepCtx(ctx, time.Duration(rng.Int64N(int64(2*l.think)+1)))
	}
}

// build reads the lists to append to through node and makes the
// transaction: compares that they still hold what was read, then (in
// both branches) gets of readOf, then (on success) the appends of elem.
func (l *lists) build(ctx context.Context, node int, id string, appendTo, readOf []string, elem string) (*kvpb.TxnRequest, Op, error) {
	cur, op := l.cs.readKeys(ctx, node, id+"-read", appendTo, l.timeout)
	if cur == nil {
		return nil, Op{}, fmt.Errorf("jepsen: append: reading %v: %s", appendTo, op.Error)
	}
	req := &kvpb.TxnRequest{Id: id, Success: txnGets(readOf), Failure: txnGets(readOf)}
	rec := Op{F: OpListTxn, Key: appendTo[0], Compared: map[string]string{}, Writes: map[string]string{}}
	for _, k := range appendTo {
		req.Compares = append(req.Compares, compareValue(k, cur[k]))
		v := elem
		if cur[k] != "" {
			v = cur[k] + listSep + elem
		}
		req.Success = append(req.Success, txnPut(k, v))
		rec.Compared[k], rec.Writes[k] = cur[k], elem
	}
	return req, rec, nil
}

// crossTxn is the kill-coordinator nemesis's transaction: an append to
// two lists (two ranges).
func (l *lists) crossTxn(ctx context.Context, rng *rand.Rand, node int) (*kvpb.TxnRequest, Op, error) {
	perm := rng.Perm(len(l.keys))
	two := []string{l.keys[perm[0]], l.keys[perm[1%len(perm)]]}
	slices.Sort(two)
	two = slices.Compact(two)
	seq := rng.Uint64()
	return l.build(ctx, node, fmt.Sprintf("%s-kc-%d", WorkloadAppend, seq), two, nil, fmt.Sprintf("kc.%d", seq))
}

// final reads every list in one transaction after the heal, within 15 s.
func (l *lists) final(ctx context.Context, logf func(string, ...any)) {
	finalTxnRead(ctx, l.cs, l.rec, OpListTxn, l.keys, 15*time.Second, logf)
}
