package jepsen

import (
	"fmt"
	"sort"
	"strings"
)

// CheckAppend is the append checker's name in summary.json.
const CheckAppend = "append"

// appendIndex is what the append checker derives from the history.
type appendIndex struct {
	txns    []*Op               // every OpListTxn, by start
	fate    map[*Op]txnFate     // of the writing ones
	writer  map[string]*Op      // list\x00element -> the transaction appending it
	final   map[string][]string // list -> its elements after the heal
	finalOp *Op
}

func newAppendIndex(ix *index) *appendIndex {
	ai := &appendIndex{fate: map[*Op]txnFate{}, writer: map[string]*Op{}, final: map[string][]string{}}
	statuses := txnStatuses(ix)
	for _, o := range ix.ops {
		if o.F != OpListTxn {
			continue
		}
		ai.txns = append(ai.txns, o)
		if len(o.Writes) > 0 {
			ai.fate[o] = fateOf(o, statuses)
			for l, e := range o.Writes {
				ai.writer[l+"\x00"+e] = o
			}
		}
		if o.Process == FinalProcess && o.Type == OK && o.Reads != nil {
			ai.finalOp = o
			ai.final = map[string][]string{}
			for l, v := range o.Reads {
				ai.final[l] = appendElems(v)
			}
		}
	}
	return ai
}

// acked: the transaction's appends happened (acknowledged, or learnt
// committed with its compares held).
func (ai *appendIndex) acked(o *Op) bool {
	f := ai.fate[o]
	return f.committed && f.succeeded
}

// checkAppend holds the append workload's lists to serializability:
//   - nothing lost: every acknowledged append is in the final value of
//     its list (read after the heal, which must succeed within 15 s);
//   - nothing duplicated, nothing invented: no read holds an element
//     twice, or one that no transaction appended, or one of a transaction
//     that failed, was aborted or whose compares failed;
//   - in order: every read of a list is a prefix of its final value;
//   - no read of part of a transaction: a read that sees a transaction's
//     append to one list sees its appends to every other list it read;
//   - real time: a read sees every append acknowledged before it began;
//   - no cycle between transactions over write-write (the lists' order),
//     write-read and read-write (anti-) dependencies: a cycle of the first
//     two is G1c (e.g. T1 read T2's append and T2 read T1's), one needing
//     an anti-dependency G2; both are non-serializable.
func checkAppend(ix *index, r *CheckResult) {
	ai := newAppendIndex(ix)
	workload := false
	for _, o := range ai.txns {
		workload = workload || o.Process != FinalProcess
	}
	if workload && ai.finalOp == nil {
		r.fail("", "no read of every list succeeded within 15 s after the heal: locks or pending transactions left behind?")
	}
	reads := 0
	for _, o := range ai.txns {
		if o.Type != OK || o.Reads == nil {
			continue
		}
		reads++
		r.Checked++
		ai.checkRead(r, o)
	}
	acked := 0
	if ai.finalOp != nil {
		inFinal := map[string]bool{}
		for l, els := range ai.final {
			for _, e := range els {
				inFinal[l+"\x00"+e] = true
			}
		}
		for _, o := range ai.txns {
			if !ai.acked(o) {
				continue
			}
			acked++
			for _, l := range sortedKeys(o.Writes) {
				if !inFinal[l+"\x00"+o.Writes[l]] {
					r.fail(l, fmt.Sprintf("lost append: %s's element %q, acknowledged at %s, is not in the final value of %s", o.TxnID, o.Writes[l], fmtNanos(ai.fate[o].end), l), o, ai.finalOp)
				}
			}
		}
		ai.checkRealTime(r)
		ai.checkCycles(r)
	}
	r.note("%d lists, %d reads checked, %d acknowledged appending transactions; %s", len(ai.final), reads, acked, txnCounts(ix, OpListTxn, txnStatuses(ix)))
	probeNotes(ix, r, AppendPrefix)
}

// checkRead checks one read's lists: no duplicate, nothing invented or
// failed, a prefix of the final value, not part of a transaction.
func (ai *appendIndex) checkRead(r *CheckResult, o *Op) {
	seen := map[string]map[string]bool{}
	for _, l := range sortedKeys(o.Reads) {
		els := appendElems(o.Reads[l])
		seen[l] = map[string]bool{}
		for _, e := range els {
			if seen[l][e] {
				r.fail(l, fmt.Sprintf("duplicated append: read %s sees %q twice in %s", o.TxnID, e, l), o)
				continue
			}
			seen[l][e] = true
			w := ai.writer[l+"\x00"+e]
			switch f := ai.fate[w]; {
			case w == nil:
				r.fail(l, fmt.Sprintf("read %s sees %q in %s, which no transaction appended", o.TxnID, e, l), o)
			case !f.committed && !f.unknown:
				r.fail(l, fmt.Sprintf("read %s sees %q in %s, appended by %s, which failed or was aborted (%s)", o.TxnID, e, l, w.TxnID, w.Error), o, w)
			case f.committed && !f.succeeded:
				r.fail(l, fmt.Sprintf("read %s sees %q in %s, appended by %s, whose compares failed", o.TxnID, e, l, w.TxnID), o, w)
			}
		}
		if fin, ok := ai.final[l]; ok && o != ai.finalOp && !isPrefix(els, fin) {
			r.fail(l, fmt.Sprintf("read %s of %s is not a prefix of its final value (out of order, or lost): read %s, final %s", o.TxnID, l, short(strings.Join(els, " ")), short(strings.Join(fin, " "))), o, ai.finalOp)
		}
	}
	// A transaction seen in one list must be seen in every other list of
	// this read it appended to.
	done := map[*Op]bool{}
	for _, l := range sortedKeys(seen) {
		for e := range seen[l] {
			w := ai.writer[l+"\x00"+e]
			if w == nil || w == o || done[w] {
				continue
			}
			done[w] = true
			for l2, e2 := range w.Writes {
				if s2, read := seen[l2]; read && !s2[e2] {
					r.fail(l2, fmt.Sprintf("read of part of a transaction: read %s sees %s's append %q to %s but not its append %q to %s", o.TxnID, w.TxnID, e, l, e2, l2), o, w)
				}
			}
		}
	}
}

// checkRealTime: a read sees every append acknowledged before it began.
// Per list, the acknowledged appends sorted by when they were known done,
// with the furthest final position among the first i: a read of n
// elements that began after the first i must have n beyond it.
func (ai *appendIndex) checkRealTime(r *CheckResult) {
	type ack struct {
		end    int64
		pos    int
		op     *Op
		maxPos int // over this ack and those before it
	}
	byList := map[string][]ack{}
	for _, l := range sortedKeys(ai.final) {
		at := map[string]int{}
		for p, x := range ai.final[l] {
			at[x] = p
		}
		for _, o := range ai.txns {
			if p, ok := at[o.Writes[l]]; ok && ai.acked(o) {
				byList[l] = append(byList[l], ack{end: ai.fate[o].end, pos: p, op: o})
			}
		}
		acks := byList[l]
		sort.Slice(acks, func(i, j int) bool { return acks[i].end < acks[j].end })
		for i := range acks {
			acks[i].maxPos = acks[i].pos
			if i > 0 {
				acks[i].maxPos = max(acks[i].pos, acks[i-1].maxPos)
			}
		}
	}
	for _, o := range ai.txns {
		if o.Type != OK || o.Reads == nil {
			continue
		}
		for _, l := range sortedKeys(o.Reads) {
			acks := byList[l]
			n := len(appendElems(o.Reads[l]))
			before := sort.Search(len(acks), func(i int) bool { return acks[i].end >= o.Start })
			if before == 0 || acks[before-1].maxPos < n {
				continue
			}
			for _, a := range acks[:before] {
				if a.pos >= n {
					r.fail(l, fmt.Sprintf("stale read: %s began at %s and read %d elements of %s, missing %s's %q acknowledged at %s", o.TxnID, fmtNanos(o.Start), n, l, a.op.TxnID, a.op.Writes[l], fmtNanos(a.end)), o, a.op)
					break
				}
			}
		}
	}
}

// Dependency kinds between transactions.
const (
	depWW = "ww"
	depWR = "wr"
	depRW = "rw"
)

// checkCycles builds the dependency graph of the transactions and fails r
// for every strongly connected component of more than one transaction:
// first over ww and wr edges alone (G1c), then with rw edges too (G2).
func (ai *appendIndex) checkCycles(r *CheckResult) {
	type edge struct {
		to   *Op
		kind string
	}
	edges := map[*Op][]edge{}
	add := func(from, to *Op, kind string) {
		if from != nil && to != nil && from != to {
			edges[from] = append(edges[from], edge{to, kind})
		}
	}
	for _, l := range sortedKeys(ai.final) {
		fin := ai.final[l]
		for i := 1; i < len(fin); i++ {
			add(ai.writer[l+"\x00"+fin[i-1]], ai.writer[l+"\x00"+fin[i]], depWW)
		}
	}
	for _, o := range ai.txns {
		if o.Type != OK || o.Reads == nil {
			continue
		}
		for l, v := range o.Reads {
			els, fin := appendElems(v), ai.final[l]
			if !isPrefix(els, fin) {
				continue // reported; its edges would be guesses
			}
			if n := len(els); n > 0 {
				add(ai.writer[l+"\x00"+els[n-1]], o, depWR)
			}
			if len(els) < len(fin) {
				add(o, ai.writer[l+"\x00"+fin[len(els)]], depRW)
			}
		}
	}
	var nodes []*Op
	for _, o := range ai.txns {
		if len(edges[o]) > 0 || o.Reads != nil || len(o.Writes) > 0 {
			nodes = append(nodes, o)
		}
	}
	reported := map[*Op]bool{}
	for _, kinds := range [][]string{{depWW, depWR}, {depWW, depWR, depRW}} {
		allowed := map[string]bool{}
		for _, k := range kinds {
			allowed[k] = true
		}
		succ := func(o *Op) []*Op {
			var out []*Op
			for _, e := range edges[o] {
				if allowed[e.kind] {
					out = append(out, e.to)
				}
			}
			return out
		}
		name := "G1c (a cycle of write-write and write-read dependencies)"
		if len(kinds) == 3 {
			name = "G2 (a cycle through an anti-dependency)"
		}
		for _, scc := range tarjan(nodes, succ) {
			if len(scc) < 2 || reported[scc[0]] {
				continue
			}
			var ids []string
			var ops []*Op
			for _, o := range scc {
				reported[o] = true
				if len(ids) < 8 {
					ids = append(ids, o.TxnID)
					ops = append(ops, o)
				}
			}
			sort.Strings(ids)
			desc := fmt.Sprintf("non-serializable: %s among %d transactions: %s", name, len(scc), strings.Join(ids, ", "))
			if len(scc) > len(ids) {
				desc += ", ..."
			}
			r.fail("", desc, ops...)
		}
	}
}

// tarjan returns the strongly connected components of the graph.
func tarjan(nodes []*Op, succ func(*Op) []*Op) [][]*Op {
	index, low := map[*Op]int{}, map[*Op]int{}
	onStack := map[*Op]bool{}
	var stack []*Op
	var out [][]*Op
	next := 0
	var visit func(v *Op)
	visit = func(v *Op) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range succ(v) {
			if _, seen := index[w]; !seen {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var scc []*Op
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				scc = append(scc, w)
				if w == v {
					break
				}
			}
			out = append(out, scc)
		}
	}
	for _, v := range nodes {
		if _, seen := index[v]; !seen {
			visit(v)
		}
	}
	return out
}
