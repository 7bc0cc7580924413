package jepsen

import (
	"fmt"
	"sort"
	"time"
)

// Checkers of the weaker read levels (bounded, session, stale). They rely
// on written values being unique, so a value read names its write.

// writesByKey returns the register and list writes of each key.
func writesByKey(ix *index) map[string][]*Op {
	out := map[string][]*Op{}
	for _, o := range ix.ops {
		if o.F == OpPut || o.F == OpCAS || o.F == OpAppend {
			out[o.Key] = append(out[o.Key], o)
		}
	}
	return out
}

// staleAgainst reports why read r is older than the acknowledged write w,
// or "" when it is not (provably) older. Lists compare elements: the read
// must contain w's element. Registers compare the write of the value read
// with w: the value is older if its write precedes w, and by revision if
// both are known.
func staleAgainst(ix *index, r *Op, w *Op) string {
	switch keyKind(r.Key) {
	case "list":
		for _, e := range listElems(r.Value) {
			if e == w.Value {
				return ""
			}
		}
		return fmt.Sprintf("lacks element %s appended by #%d (acknowledged at %s)", w.Value, w.Index, fmtNanos(w.End))
	case "register":
		if r.Missing {
			return fmt.Sprintf("found the key absent, though #%d wrote %q (acknowledged at %s)", w.Index, w.Value, fmtNanos(w.End))
		}
		if ix.olderRevision(r, w) {
			return fmt.Sprintf("returned revision %d, older than #%d's revision %d (acknowledged at %s)", r.Revision, w.Index, w.Revision, fmtNanos(w.End))
		}
		if wv := ix.writer[r.Key+"\x00"+r.Value]; wv != nil && ix.precedes(wv, w) {
			return fmt.Sprintf("returned %q written by #%d, which precedes #%d (acknowledged at %s)", r.Value, wv.Index, w.Index, fmtNanos(w.End))
		}
	}
	return ""
}

// checkBounded: a bounded read starting at S with bound B reflects every
// write acknowledged before S - B.
func checkBounded(ix *index, r *CheckResult) {
	writes := writesByKey(ix)
	served := 0
	for _, rd := range ix.okReads(Bounded) {
		if rd.F != OpGet {
			continue
		}
		r.Checked++
		if rd.StalenessMs != nil && *rd.StalenessMs >= 0 && *rd.StalenessMs > rd.MaxStaleness {
			r.fail(rd.Key, fmt.Sprintf("bounded read served with staleness %d ms over its max_staleness %d ms", *rd.StalenessMs, rd.MaxStaleness), rd)
		}
		cutoff := rd.Start - rd.MaxStaleness*int64(time.Millisecond)
		for _, w := range writes[rd.Key] {
			if w.Type != OK || w.End >= cutoff {
				continue
			}
			if why := staleAgainst(ix, rd, w); why != "" {
				r.fail(rd.Key, fmt.Sprintf("bounded read (max_staleness %d ms) started at %s %s, before the cut-off %s", rd.MaxStaleness, fmtNanos(rd.Start), why, fmtNanos(cutoff)), w, rd)
				break
			}
		}
		served++
	}
	r.note("%d bounded reads checked", served)
}

// checkSession: a session read returns nothing older than what the same
// session already wrote or read (read-your-writes, monotonic reads). Every
// op of a client carries its session token forward, so each client is one
// session.
func checkSession(ix *index, r *CheckResult) {
	byProc := map[int][]*Op{}
	for _, o := range ix.ops {
		if o.Process >= 0 {
			byProc[o.Process] = append(byProc[o.Process], o)
		}
	}
	procs := make([]int, 0, len(byProc))
	for p := range byProc {
		procs = append(procs, p)
	}
	sort.Ints(procs)
	for _, p := range procs {
		// seen: per key, the session's acknowledged writes and ok reads so
		// far (a client is sequential: its ops never overlap).
		seen := map[string][]*Op{}
		for _, o := range byProc[p] {
			if o.Type != OK {
				continue
			}
			if o.F == OpGet && o.Level == Session {
				r.Checked++
				for _, prev := range seen[o.Key] {
					if why := sessionOlder(ix, o, prev); why != "" {
						r.fail(o.Key, fmt.Sprintf("session read by client %d %s", p, why), prev, o)
						break
					}
				}
			}
			if o.F == OpGet || o.F == OpPut || o.F == OpCAS || o.F == OpAppend {
				seen[o.Key] = append(seen[o.Key], o)
			}
		}
	}
	r.note("%d session reads checked over %d clients", r.Checked, len(procs))
}

// sessionOlder reports why session read rd is older than prev, an earlier
// op of the same session: a write it must see, or a read it must not go
// behind.
func sessionOlder(ix *index, rd, prev *Op) string {
	if prev.IsWrite() {
		return staleAgainst(ix, rd, prev)
	}
	// prev is a read of the same key: rd must not go backwards.
	switch keyKind(rd.Key) {
	case "list":
		a, b := listElems(prev.Value), listElems(rd.Value)
		if !isPrefix(a, b) {
			return fmt.Sprintf("returned %d elements, not an extension of the %d that #%d read", len(b), len(a), prev.Index)
		}
	case "register":
		if prev.Missing {
			return ""
		}
		if rd.Missing {
			return fmt.Sprintf("found the key absent after #%d read %q", prev.Index, prev.Value)
		}
		if ix.olderRevision(rd, prev) {
			return fmt.Sprintf("returned revision %d after #%d read revision %d", rd.Revision, prev.Index, prev.Revision)
		}
		wv, wp := ix.writer[rd.Key+"\x00"+rd.Value], ix.writer[prev.Key+"\x00"+prev.Value]
		if wv != nil && wp != nil && ix.precedes(wv, wp) {
			return fmt.Sprintf("returned %q (#%d), older than %q (#%d) that #%d read", rd.Value, wv.Index, prev.Value, wp.Index, prev.Index)
		}
	}
	return ""
}

// checkStale: every value read, at any level, was written by some write
// invoked before the read ended; and the reads one replica (one process
// incarnation) serves never go backwards: neither its applied index nor
// any key's state.
func checkStale(ix *index, r *CheckResult) {
	type replicaKey struct {
		node string
		inc  int
	}
	byReplica := map[replicaKey][]*Op{}
	for _, rd := range ix.okReads("") {
		r.Checked++
		if why := invented(ix, rd); why != "" {
			r.fail(rd.Key, fmt.Sprintf("%s read %s", rd.Level, why), rd)
		}
		if rd.ServedBy != "" {
			k := replicaKey{rd.ServedBy, ix.incarnation(rd.ServedBy, rd.Start)}
			byReplica[k] = append(byReplica[k], rd)
		}
	}
	for k, reads := range byReplica {
		where := fmt.Sprintf("replica %s (incarnation %d) went backwards", k.node, k.inc)
		// The applied index of each range, over every key (0: not
		// reported, e.g. by an HTTP 404 without the header).
		byRange := map[uint64][]*Op{}
		for _, rd := range reads {
			byRange[rd.RangeID] = append(byRange[rd.RangeID], rd)
		}
		for rid, rreads := range byRange {
			if rid == 0 && len(byRange) > 1 {
				continue // reads that did not say their range (HTTP 404s)
			}
			sweep(rreads, func(a, b *Op) bool { return b.AppliedIndex > a.AppliedIndex }, func(best, rd *Op) {
				if rd.AppliedIndex != 0 && rd.AppliedIndex < best.AppliedIndex {
					r.fail(rd.Key, fmt.Sprintf("%s: range %d applied index %d after %d", where, rid, rd.AppliedIndex, best.AppliedIndex), best, rd)
				}
			})
		}
		// Each key's state.
		byKey := map[string][]*Op{}
		for _, rd := range reads {
			byKey[rd.Key] = append(byKey[rd.Key], rd)
		}
		for _, key := range sortedKeys(byKey) {
			sweep(byKey[key], ix.newerRead, func(best, rd *Op) {
				if why := replicaOlder(ix, rd, best); why != "" {
					if uninitialized(rd) && ix.opts.known(KnownUninitializedReplica) {
						r.tolerate(KnownUninitializedReplica, fmt.Sprintf("%s: #%d %s", where, rd.Index, why))
						return
					}
					r.fail(key, where+": "+why, best, rd)
				}
			})
		}
	}
	restarts := 0
	for _, times := range ix.restarts {
		restarts += len(times)
	}
	// A restarted process may come back with an older state than its
	// previous incarnation served, until it has replayed its log: each
	// incarnation is checked on its own.
	r.note("%d reads checked for invented values; %d replica incarnations (%d restarts)", r.Checked, len(byReplica), restarts)
}

// uninitialized reports whether a read came from a replica with no state
// at all: the key absent at applied index 0 (a range's log always holds
// entries before any key is written).
func uninitialized(rd *Op) bool {
	return rd.F == OpGet && rd.Missing && rd.AppliedIndex == 0
}

// sweep calls check(best, rd) for each read rd (sorted by start) with the
// best (by better) read that completed before rd started, if any.
func sweep(reads []*Op, better func(a, b *Op) bool, check func(best, rd *Op)) {
	byEnd := append([]*Op(nil), reads...)
	sort.SliceStable(byEnd, func(i, j int) bool { return byEnd[i].End < byEnd[j].End })
	var best *Op
	j := 0
	for _, rd := range reads {
		for j < len(byEnd) && byEnd[j].End < rd.Start {
			if best == nil || better(best, byEnd[j]) {
				best = byEnd[j]
			}
			j++
		}
		if best != nil {
			check(best, rd)
		}
	}
}

// newerRead reports whether read b shows a newer state of its key than a.
func (ix *index) newerRead(a, b *Op) bool {
	switch keyKind(a.Key) {
	case "list":
		return len(listElems(b.Value)) > len(listElems(a.Value))
	case "set":
		return len(b.Elements) > len(a.Elements)
	}
	if a.Missing {
		return !b.Missing
	}
	return ix.olderRevision(a, b) || ix.precedes(ix.writer[a.Key+"\x00"+a.Value], ix.writer[b.Key+"\x00"+b.Value])
}

// invented reports why read rd returned a value nobody wrote (or wrote
// only after the read ended, or whose write failed), or "".
func invented(ix *index, rd *Op) string {
	switch keyKind(rd.Key) {
	case "register":
		if rd.Missing {
			return ""
		}
		w := ix.writer[rd.Key+"\x00"+rd.Value]
		switch {
		case w == nil:
			return fmt.Sprintf("returned %q, which no write wrote", rd.Value)
		case w.Start > rd.End:
			return fmt.Sprintf("returned %q before its write #%d was invoked", rd.Value, w.Index)
		}
	case "list":
		els := listElems(rd.Value)
		for i, e := range els {
			a := ix.appendOf[rd.Key+"\x00"+e]
			switch {
			case a == nil:
				return fmt.Sprintf("returned element %s, which no append wrote", e)
			case a.Start > rd.End:
				return fmt.Sprintf("returned element %s before its append #%d was invoked", e, a.Index)
			case a.Expected != joinElems(els[:i]):
				return fmt.Sprintf("returned element %s after %q, but its append #%d expected %q", e, joinElems(els[:i]), a.Index, a.Expected)
			}
		}
	case "set":
		for _, e := range rd.Elements {
			a := ix.writer[e+"\x00"+e]
			switch {
			case a == nil:
				return fmt.Sprintf("returned element %s, which no add wrote", e)
			case a.Start > rd.End:
				return fmt.Sprintf("returned element %s before its add #%d was invoked", e, a.Index)
			}
		}
	}
	return ""
}

func joinElems(els []string) string {
	out := ""
	for i, e := range els {
		if i > 0 {
			out += " "
		}
		out += e
	}
	return out
}

// replicaOlder reports why rd, served by the same replica after prev,
// shows an older state.
func replicaOlder(ix *index, rd, prev *Op) string {
	switch keyKind(rd.Key) {
	case "set":
		have := map[string]bool{}
		for _, e := range rd.Elements {
			have[e] = true
		}
		for _, e := range prev.Elements {
			if !have[e] {
				return fmt.Sprintf("scan lost element %s that #%d returned", e, prev.Index)
			}
		}
		return ""
	}
	return sessionOlder(ix, rd, prev)
}
