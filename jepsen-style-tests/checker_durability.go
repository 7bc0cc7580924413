package jepsen

import "fmt"

// checkDurability: after the heal, the final reads hold every acknowledged
// write: each register at least as new as its newest acknowledged write,
// each list with every acknowledged element, the set with every
// acknowledged element.
func checkDurability(ix *index, r *CheckResult) {
	writes := writesByKey(ix)
	missingFinal := 0
	for _, key := range sortedKeys(writes) {
		var acked []*Op
		for _, w := range writes[key] {
			if w.Type == OK {
				acked = append(acked, w)
			}
		}
		if len(acked) == 0 {
			continue
		}
		fin := ix.final[key]
		if fin == nil {
			missingFinal++
			continue
		}
		r.Checked += len(acked)
		lost := 0
		var first *Op
		for _, w := range acked {
			if why := staleAgainst(ix, fin, w); why != "" {
				if lost == 0 {
					first = w
					r.fail(key, "final read after the heal "+why, w, fin)
				}
				lost++
			}
		}
		if lost > 1 {
			r.note("%s: %d acknowledged writes missing from the final read (first #%d)", key, lost, first.Index)
		}
	}
	var adds []*Op
	for _, o := range ix.ops {
		if o.F == OpAdd && o.Type == OK {
			adds = append(adds, o)
		}
	}
	if len(adds) > 0 {
		if ix.finalScan == nil {
			missingFinal++
		} else {
			have := map[string]bool{}
			for _, e := range ix.finalScan.Elements {
				have[e] = true
			}
			lost := 0
			for _, a := range adds {
				r.Checked++
				if !have[a.Value] {
					lost++
					if lost <= 10 {
						r.fail(a.Key, fmt.Sprintf("acknowledged add of %s (at %s, revision %d) missing from the final scan", a.Value, fmtNanos(a.End), a.Revision), a, ix.finalScan)
					}
				}
			}
			if lost > 10 {
				r.note("%d acknowledged adds missing from the final scan", lost)
			}
		}
	}
	if missingFinal > 0 {
		r.note("%d keys (or the set) have no successful final read: the cluster did not recover", missingFinal)
		if r.Verdict == Pass {
			r.Verdict = Unknown
		}
	}
	r.note("%d acknowledged writes checked against the final state", r.Checked)
}

// checkHonesty: a write reported as failed (definitely not applied) never
// becomes visible to any read, at any level, nor in the final state.
func checkHonesty(ix *index, r *CheckResult) {
	seen := map[string]*Op{} // key\x00value or key\x00element -> first read showing it
	for _, rd := range ix.okReads("") {
		switch keyKind(rd.Key) {
		case "register":
			if !rd.Missing {
				if _, ok := seen[rd.Key+"\x00"+rd.Value]; !ok {
					seen[rd.Key+"\x00"+rd.Value] = rd
				}
			}
		case "list":
			for _, e := range listElems(rd.Value) {
				if _, ok := seen[rd.Key+"\x00"+e]; !ok {
					seen[rd.Key+"\x00"+e] = rd
				}
			}
		case "set":
			for _, e := range rd.Elements {
				if _, ok := seen[e+"\x00"+e]; !ok {
					seen[e+"\x00"+e] = rd
				}
			}
		}
	}
	for _, w := range ix.ops {
		if !w.IsWrite() || w.Type != Fail {
			continue
		}
		r.Checked++
		if rd := seen[w.Key+"\x00"+w.Value]; rd != nil {
			r.fail(w.Key, fmt.Sprintf("%s of %q failed (%s) but read #%d saw it", w.F, w.Value, w.Error, rd.Index), w, rd)
		}
	}
	r.note("%d failed writes checked", r.Checked)
}
