package jepsen

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// CheckLease is the lease checker's name in summary.json.
const CheckLease = "lease"

// leaseInfo is what the history says about one lease.
type leaseInfo struct {
	id         int64
	ttl        int64 // ns
	grant      *Op
	puts       []*Op
	keepalives []*Op
	revokes    []*Op
	// alive: the lease certainly lives until then, TTL after the send
	// time of its latest answered grant or keepalive (the server's
	// promise: never expired before that).
	alive int64
	// revokeSent: the first revoke that may have been applied was sent
	// (math.MaxInt64 when none was).
	revokeSent int64
	// gone: by then its keys must be gone: when the first revoke was
	// acknowledged, or TTL plus the expiry bound after the last grant or
	// keepalive that may have been applied was answered or given up,
	// moved later by every fault period and restart overlapping that
	// window (a meta range without quorum expires nothing, and a new
	// deciding node counts a full TTL again).
	gone int64
	why  string
}

// indexLeases gathers the granted leases of h.
func indexLeases(h *History, bound time.Duration) map[int64]*leaseInfo {
	leases := map[int64]*leaseInfo{}
	get := func(id int64) *leaseInfo {
		l := leases[id]
		if l == nil {
			l = &leaseInfo{id: id, revokeSent: math.MaxInt64}
			leases[id] = l
		}
		return l
	}
	type period struct{ start, end int64 }
	var periods []period
	for _, f := range h.Faults {
		periods = append(periods, period{f.Start, f.End})
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		switch o.F {
		case OpLeaseGrant:
			if o.Type == OK && o.Lease != 0 {
				l := get(o.Lease)
				l.grant, l.ttl = o, o.TTL*int64(time.Second)
			}
		case OpLeasePut:
			if o.Lease != 0 {
				get(o.Lease).puts = append(get(o.Lease).puts, o)
			}
		case OpLeaseKeepAlive:
			get(o.Lease).keepalives = append(get(o.Lease).keepalives, o)
		case OpLeaseRevoke:
			get(o.Lease).revokes = append(get(o.Lease).revokes, o)
		case OpRestart:
			periods = append(periods, period{o.Start, o.Start})
		}
	}
	for id, l := range leases {
		if l.grant == nil {
			delete(leases, id) // ops on a lease whose grant was never answered: nothing to hold it to
			continue
		}
		l.alive = l.grant.Start + l.ttl
		last := l.grant.End
		for _, k := range l.keepalives {
			if k.Type == OK {
				l.alive = max(l.alive, k.Start+l.ttl)
			}
			if k.Type != Fail {
				last = max(last, k.End)
			}
		}
		revokeAck := int64(math.MaxInt64)
		for _, r := range l.revokes {
			if r.Type != Fail {
				l.revokeSent = min(l.revokeSent, r.Start)
			}
			if r.Type == OK {
				revokeAck = min(revokeAck, r.End)
			}
		}
		b := int64(bound)
		expiry := last + l.ttl + b
		faults := 0
		for moved := true; moved; {
			moved = false
			for _, p := range periods {
				if p.start < expiry && p.end >= last && p.end+l.ttl+b > expiry {
					expiry, moved = p.end+l.ttl+b, true
					faults++
				}
			}
		}
		l.gone, l.why = expiry, fmt.Sprintf("TTL %v + bound %v after its last keepalive at %s", time.Duration(l.ttl), bound, fmtNanos(last))
		if faults > 0 {
			l.why = fmt.Sprintf("TTL %v + bound %v after its last keepalive at %s, moved by faults to %s", time.Duration(l.ttl), bound, fmtNanos(last), fmtNanos(expiry))
		}
		if revokeAck < l.gone {
			l.gone, l.why = revokeAck, "its revoke was acknowledged at "+fmtNanos(revokeAck)
		}
	}
	return leases
}

// checkLease holds the server to its lease promises:
//   - one id per grant: no two answered grants name the same lease;
//   - never early: a key attached to a lease is present at every
//     linearizable read that ended before the lease's alive time (TTL
//     after the latest answered grant or keepalive was sent) unless a
//     revoke had been sent; no keepalive, put or revoke is refused with
//     LEASE_NOT_FOUND before then; a watcher sees no LEASE_EXPIRED delete
//     before then, and no LEASE_REVOKED delete before a revoke was sent;
//   - never late: no read that started after the lease's gone time (see
//     leaseInfo) finds its key, the final reads after the heal included;
//   - seen: a watcher on LeasePrefix watching since before a key's put
//     delivers the key's delete (with its cause) when the final read
//     finds it gone.
func checkLease(ix *index, r *CheckResult) {
	bound := ix.opts.LeaseExpiryBound
	if bound == 0 {
		bound = 3 * time.Second
	}
	leases := indexLeases(ix.h, bound)
	putOf := map[string]*Op{}
	for _, l := range leases {
		for _, p := range l.puts {
			putOf[p.Key] = p
		}
	}
	// Every answered grant names a lease of its own: two grants answered
	// with one id would share its keys, keepalives and end.
	grantOf := map[int64]*Op{}
	for _, o := range ix.ops {
		if o.F != OpLeaseGrant || o.Type != OK || o.Lease == 0 {
			continue
		}
		r.Checked++
		if first := grantOf[o.Lease]; first != nil {
			r.fail(fmt.Sprintf("%s%d/", LeasePrefix, o.Lease), fmt.Sprintf("lease id %d granted twice", o.Lease), first, o)
			continue
		}
		grantOf[o.Lease] = o
	}
	final := map[string]*Op{}
	reads, early, late, kept, revoked := 0, 0, 0, 0, 0
	for _, l := range leases {
		for _, k := range l.keepalives {
			if k.Type == OK {
				kept++
				break
			}
		}
		if l.revokeSent != math.MaxInt64 {
			revoked++
		}
	}
	for _, o := range ix.ops {
		switch {
		case o.F == OpLeaseGet && o.Type == OK:
			id, _ := leaseOfKey(o.Key)
			l := leases[id]
			if l == nil {
				continue
			}
			reads++
			r.Checked++
			if o.Process == FinalProcess {
				final[o.Key] = o
			}
			put := putOf[o.Key]
			if o.Missing {
				if put != nil && put.Type == OK && put.End < o.Start && l.revokeSent > o.End && o.End < l.alive {
					early++
					r.fail(o.Key, fmt.Sprintf("gone at a read ending at %s, though lease %d lives until at least %s and no revoke was sent", fmtNanos(o.End), l.id, fmtNanos(l.alive)), put, o)
				}
			} else if o.Start > l.gone {
				late++
				r.fail(o.Key, fmt.Sprintf("present at a read starting at %s, past lease %d's end at %s (%s)", fmtNanos(o.Start), l.id, fmtNanos(l.gone), l.why), put, o)
			}
		case (o.F == OpLeaseKeepAlive || o.F == OpLeasePut || o.F == OpLeaseRevoke) && strings.Contains(o.Error, string(reasonLeaseNotFound)):
			l := leases[o.Lease]
			if l != nil && l.revokeSent > o.End && o.End < l.alive {
				early++
				r.fail(fmt.Sprintf("%s%d/", LeasePrefix, l.id), fmt.Sprintf("%s of lease %d refused with LEASE_NOT_FOUND at %s, though it lives until at least %s and no revoke was sent", o.F, l.id, fmtNanos(o.End), fmtNanos(l.alive)), l.grant, o)
			}
		}
	}
	// The final reads: every key that may exist must have one.
	noFinal, notYet := 0, 0
	for key, p := range putOf {
		if p.Type == Fail {
			continue
		}
		fin := final[key]
		id, _ := leaseOfKey(key)
		switch {
		case fin == nil:
			noFinal++
		case !fin.Missing && fin.Start <= leases[id].gone:
			notYet++
		}
	}
	if noFinal > 0 {
		r.note("%d lease keys have no successful final read: the cluster did not recover", noFinal)
		if r.Verdict == Pass {
			r.Verdict = Unknown
		}
	}
	if notYet > 0 {
		r.note("%d lease keys were read at the end before their lease's bound passed (not checked for lateness)", notYet)
	}
	seen := checkLeaseWatch(ix, r, leases, putOf, final)
	r.note("%d leases granted (%d kept alive, %d revoked), %d keys; %d reads checked: %d too early, %d too late; %d lease deletes seen by watchers",
		len(leases), kept, revoked, len(putOf), reads, early, late, seen)
}

// checkLeaseWatch checks the events of the watchers on LeasePrefix: each
// lease delete's cause, and that every key found gone at the end was
// seen deleted by a watcher watching since before its put. It returns the
// lease deletes seen.
func checkLeaseWatch(ix *index, r *CheckResult, leases map[int64]*leaseInfo, putOf, final map[string]*Op) int {
	type lw struct {
		segStart int64 // the start of the watcher's last segment (-1: none)
		deleted  map[string]bool
		cursor   string // the last one delivered
	}
	watchers := map[int]*lw{}
	byIndex := append([]*Op(nil), ix.ops...)
	sort.Slice(byIndex, func(i, j int) bool { return byIndex[i].Index < byIndex[j].Index })
	total := 0
	for _, o := range byIndex {
		w := watchers[o.Process]
		switch o.F {
		case OpWatch:
			if o.Key != LeasePrefix || o.Type != OK {
				continue
			}
			if w == nil {
				w = &lw{segStart: -1, deleted: map[string]bool{}}
				watchers[o.Process] = w
			}
			if w.segStart < 0 {
				w.segStart = o.End
			}
		case OpWatchCompacted:
			if w != nil {
				w.segStart = -1
				w.deleted = map[string]bool{}
			}
		case OpWatchMsg:
			if w == nil {
				continue
			}
			w.cursor = o.Cursor
			for _, e := range o.Events {
				if e.Type != EventDelete || e.Cause == "" {
					continue // the watch checker's: a lease key deleted without a cause
				}
				id, _ := leaseOfKey(e.Key)
				l := leases[id]
				if l == nil {
					continue
				}
				total++
				w.deleted[e.Key] = true
				switch {
				case e.Cause == CauseLeaseExpired && o.Start < l.alive:
					r.fail(e.Key, fmt.Sprintf("a watcher saw the key deleted by LEASE_EXPIRED at %s, though lease %d lives until at least %s", fmtNanos(o.Start), l.id, fmtNanos(l.alive)), l.grant, o)
				case e.Cause == CauseLeaseRevoked && o.Start < l.revokeSent:
					r.fail(e.Key, fmt.Sprintf("a watcher saw the key deleted by LEASE_REVOKED at %s, before any revoke of lease %d was sent", fmtNanos(o.Start), l.id), l.grant, o)
				}
			}
		}
	}
	for _, key := range sortedKeys(final) {
		fin, p := final[key], putOf[key]
		if !fin.Missing || p == nil || p.Type != OK {
			continue
		}
		for _, proc := range sortedInts(watchers) {
			w := watchers[proc]
			if w.segStart >= 0 && w.segStart < p.Start && !w.deleted[key] {
				r.fail(key, fmt.Sprintf("gone at the end (read at %d:%d), but watcher %d, watching since %s, never saw its lease delete (its cursor reached %s)",
					fin.RangeID, fin.AppliedIndex, proc, fmtNanos(w.segStart), w.cursor), p, fin)
			}
		}
	}
	return total
}

func sortedInts[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
