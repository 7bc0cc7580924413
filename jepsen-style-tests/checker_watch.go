package jepsen

import (
	"fmt"
	"maps"
	"sort"
	"strings"
)

// CheckWatch is the watch checker's name in summary.json.
const CheckWatch = "watch"

// watchSegment is a stretch of one watcher's streams with no COMPACTED
// between them: it starts at the cursor of the first stream's first
// message and ends at the last cursor delivered.
type watchSegment struct {
	start     Cursor
	startTime int64 // when the first message came
	end       Cursor
	final     bool // the watcher's last segment: it caught up after the heal
	delivered map[rangeIndex]bool
}

// eventID names an event: one entry (range, index) may write several keys.
type eventID struct {
	at  rangeIndex
	key string
}

// watchWrites indexes the writes a watcher may see: puts (and
// compare-and-swaps, lease puts) by key and unique value, deletes by key.
type watchWrites struct {
	puts   map[string]*Op   // key\x00value
	dels   map[string][]*Op // key
	leases map[int64]bool   // granted (or maybe granted) lease ids
	all    []*Op            // every write that may have applied, by start
}

func indexWatchWrites(ix *index) *watchWrites {
	ww := &watchWrites{puts: map[string]*Op{}, dels: map[string][]*Op{}, leases: map[int64]bool{}}
	for _, o := range ix.ops {
		switch o.F {
		case OpWatchPut, OpWatchCAS, OpLeasePut:
			if o.Type != Fail {
				ww.puts[o.Key+"\x00"+o.Value] = o
				ww.all = append(ww.all, o)
			}
		case OpWatchDelete:
			if o.Type != Fail {
				ww.dels[o.Key] = append(ww.dels[o.Key], o)
				ww.all = append(ww.all, o)
			}
		case OpLeaseGrant:
			if o.Type == OK {
				ww.leases[o.Lease] = true
			}
		}
	}
	return ww
}

// checkWatch holds every watcher to the watch's promises, per watcher and
// segment (its streams between two COMPACTED: a watch from now owes
// nothing to the one before):
//   - exactly once: no event (range, index, key) delivered twice, no
//     write matched by two events;
//   - in order: per range, indexes never go back and strictly increase
//     from one entry to the next (one entry may write several keys) over
//     everything received, across resumes, starting after the starting
//     cursor; a message's cursor covers its events; a resumed stream
//     starts no earlier than the cursor it resumed from;
//   - nothing invented: a put event is a put or compare-and-swap of that
//     unique value that was acknowledged (at exactly the event's range and
//     index) or whose outcome is unknown; a delete event is a delete of the
//     key acknowledged at that range and index, or an unknown one, or
//     carries a lease cause and the key's own lease;
//   - nothing lost: within each segment, every write acknowledged after
//     its start (revision above the starting cursor in that range, or
//     invoked after the start in a range the cursor did not have yet) up
//     to the segment's last cursor (the last segment: every one, since the
//     watcher caught up after the heal) was delivered.
func checkWatch(ix *index, r *CheckResult) {
	ww := indexWatchWrites(ix)
	byProc := map[int][]*Op{}
	for _, o := range ix.ops {
		switch o.F {
		case OpWatch, OpWatchMsg, OpWatchEnd, OpWatchCompacted:
			byProc[o.Process] = append(byProc[o.Process], o)
		}
	}
	events, resumes, compactions, failedStarts := 0, 0, 0, 0
	ranges := map[uint64]bool{}
	for _, proc := range sortedInts(byProc) {
		ops := byProc[proc]
		sort.Slice(ops, func(i, j int) bool { return ops[i].Index < ops[j].Index })
		e, res, comp, fs := checkWatcher(ix, r, ww, proc, ops)
		events, resumes, compactions, failedStarts = events+e, resumes+res, compactions+comp, failedStarts+fs
		for _, o := range ops {
			for _, e := range o.Events {
				ranges[e.Range] = true
			}
		}
	}
	r.note("%d watchers: %d events from %d ranges, %d resumes (%d watch calls refused), %d COMPACTED, %d acknowledged writes checked for delivery",
		len(byProc), events, len(ranges), resumes, failedStarts, compactions, r.Checked)
}

// checkWatcher checks one watcher's ops (in recording order) and returns
// its counts: events, resumes, compactions and refused watch calls.
func checkWatcher(ix *index, r *CheckResult, ww *watchWrites, proc int, ops []*Op) (events, resumes, compactions, failedStarts int) {
	prefix := ""
	var segs []*watchSegment
	var seg *watchSegment
	last := map[uint64]uint64{} // highest index received (or started after) per range
	matched := map[*Op]*Op{}    // write -> the message that delivered it
	seen := map[eventID]*Op{}   // the message that delivered each event
	who := fmt.Sprintf("watcher %d", proc)
	// sameEntry holds the (range, index) of the last event: the next may
	// share it when one entry wrote several keys.
	sameEntry := map[rangeIndex]bool{}
	for _, o := range ops {
		switch o.F {
		case OpWatch:
			if o.Type != OK {
				failedStarts++
				continue
			}
			prefix = o.Key
			cur, err := ParseCursor(o.Cursor)
			if err != nil {
				r.fail(prefix, fmt.Sprintf("%s: starting cursor %q does not parse: %v", who, o.Cursor, err), o)
				continue
			}
			if seg == nil {
				// A new segment is a new watch from now (possibly through a
				// lagging follower): it owes nothing to the one before.
				seg = &watchSegment{start: cur, startTime: o.End, end: maps.Clone(cur), delivered: map[rangeIndex]bool{}}
				segs = append(segs, seg)
				last, seen, matched, sameEntry = maps.Clone(cur), map[eventID]*Op{}, map[*Op]*Op{}, map[rangeIndex]bool{}
				continue
			}
			resumes++
			from, _ := ParseCursor(o.From)
			for rg, idx := range from {
				if have, ok := cur[rg]; ok && have < idx {
					r.fail(prefix, fmt.Sprintf("%s: resumed from %s but the stream started at %s, behind it in range %d", who, o.From, o.Cursor, rg), o)
				}
			}
			for rg, idx := range cur {
				seg.end[rg] = max(seg.end[rg], idx)
			}
		case OpWatchMsg:
			if seg == nil {
				r.fail(prefix, who+": a message outside any stream", o)
				continue
			}
			cur, err := ParseCursor(o.Cursor)
			if err != nil {
				r.fail(prefix, fmt.Sprintf("%s: cursor %q does not parse: %v", who, o.Cursor, err), o)
			}
			for _, e := range o.Events {
				events++
				k := rangeIndex{e.Range, e.Index}
				if prev := seen[eventID{k, e.Key}]; prev != nil {
					r.fail(e.Key, fmt.Sprintf("%s: event %d:%d on %q delivered twice", who, e.Range, e.Index, e.Key), prev, o)
					continue
				}
				seen[eventID{k, e.Key}] = o
				// One entry may write several keys (a lease's deletes): they
				// share its index, so the order is strict only across entries.
				if e.Index < last[e.Range] || (e.Index == last[e.Range] && !sameEntry[k]) {
					r.fail(e.Key, fmt.Sprintf("%s: event %d:%d out of order: after index %d of its range (received or started from)", who, e.Range, e.Index, last[e.Range]), o)
				}
				last[e.Range] = max(last[e.Range], e.Index)
				sameEntry = map[rangeIndex]bool{k: true}
				if err == nil && !cur.covers(e.Range, e.Index) {
					r.fail(e.Key, fmt.Sprintf("%s: event %d:%d in a message whose cursor %q does not cover it", who, e.Range, e.Index, o.Cursor), o)
				}
				seg.delivered[k] = true
				if w := matchEvent(r, ww, matched, who, e, o); w != nil {
					if prev := matched[w]; prev != nil {
						r.fail(e.Key, fmt.Sprintf("%s: write #%d delivered twice (again as %d:%d)", who, w.Index, e.Range, e.Index), w, prev, o)
					}
					matched[w] = o
				}
			}
			for rg, idx := range cur {
				seg.end[rg] = max(seg.end[rg], idx)
			}
		case OpWatchCompacted:
			compactions++
			seg = nil
		}
	}
	if seg != nil {
		seg.final = true
	}
	for _, s := range segs {
		for _, w := range ww.all {
			if !strings.HasPrefix(w.Key, prefix) || prefix == "" || w.Type != OK || w.RangeID == 0 || (w.F == OpWatchDelete && w.Missing) {
				continue
			}
			required := false
			if st, ok := s.start[w.RangeID]; ok {
				required = w.Revision > st
			} else {
				required = w.Start > s.startTime
			}
			if !s.final {
				required = required && s.end.covers(w.RangeID, w.Revision)
			}
			if !required {
				continue
			}
			r.Checked++
			if !s.delivered[rangeIndex{w.RangeID, w.Revision}] {
				why := "its segment's cursor covers it"
				if s.final {
					why = "the watcher caught up after the heal"
				}
				r.fail(w.Key, fmt.Sprintf("%s: acknowledged %s at %d:%d (at %s) never delivered, though %s", who, w.F, w.RangeID, w.Revision, fmtNanos(w.End), why), w)
			}
		}
	}
	return events, resumes, compactions, failedStarts
}

// matchEvent finds the write an event reports, failing r when there is
// none (an unknown delete of the key not matched yet will do); nil for lease deletes (checkLease looks at those) and invented
// events.
func matchEvent(r *CheckResult, ww *watchWrites, matched map[*Op]*Op, who string, e WatchEvent, msg *Op) *Op {
	at := fmt.Sprintf("%d:%d", e.Range, e.Index)
	if e.Type == EventPut {
		w := ww.puts[e.Key+"\x00"+e.Value]
		switch {
		case w == nil:
			r.fail(e.Key, fmt.Sprintf("%s: invented put event %s of %q: no write of that value", who, at, e.Value), msg)
			return nil
		case w.Type == OK && (w.RangeID != e.Range || w.Revision != e.Index):
			r.fail(e.Key, fmt.Sprintf("%s: put event %s of %q, but the write was acknowledged at %d:%d", who, at, e.Value, w.RangeID, w.Revision), w, msg)
		case w.Lease != e.Lease:
			r.fail(e.Key, fmt.Sprintf("%s: put event %s with lease %d, but the write attached lease %d", who, at, e.Lease, w.Lease), w, msg)
		}
		return w
	}
	if e.Cause != "" {
		id, ok := leaseOfKey(e.Key)
		switch {
		case e.Cause != CauseLeaseExpired && e.Cause != CauseLeaseRevoked:
			r.fail(e.Key, fmt.Sprintf("%s: delete event %s with unknown cause %q", who, at, e.Cause), msg)
		case !ok || id != e.Lease || !ww.leases[id]:
			r.fail(e.Key, fmt.Sprintf("%s: delete event %s by lease %d (%s), which is not the key's granted lease", who, at, e.Lease, e.Cause), msg)
		}
		return nil
	}
	var unknown *Op
	for _, w := range ww.dels[e.Key] {
		if w.Type == OK && w.RangeID == e.Range && w.Revision == e.Index {
			return w
		}
		if w.Type == Info && unknown == nil && matched[w] == nil {
			unknown = w
		}
	}
	if unknown != nil {
		return unknown
	}
	if _, lease := leaseOfKey(e.Key); lease {
		r.fail(e.Key, fmt.Sprintf("%s: delete event %s of a lease key without a lease cause", who, at), msg)
	} else {
		r.fail(e.Key, fmt.Sprintf("%s: invented delete event %s: no delete of the key acknowledged there or unknown", who, at), msg)
	}
	return nil
}

// hasOp reports whether h holds an op of kind f.
func hasOp(h *History, f string) bool {
	for i := range h.Ops {
		if h.Ops[i].F == f {
			return true
		}
	}
	return false
}
