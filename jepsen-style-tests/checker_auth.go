package jepsen

import (
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
)

// CheckAuth is the verdict on revocations (the auth-revoke nemesis): no
// operation of the revoked user succeeded once the revocation's bound had
// passed, and the revocation bit. Check runs it when the history holds
// auth events.
const CheckAuth = "auth"

// authWindow is a span in which every client operation must be refused:
// from a revocation's acknowledgement plus its bound to the start of the
// grant that undid it (or the history's end).
type authWindow struct {
	revoke, grant *Op // grant nil: never granted back
	from, to      int64
}

// hasAuthEvents reports whether the nemesis changed auth during the run.
func hasAuthEvents(h *History) bool {
	for i := range h.Ops {
		if h.Ops[i].F == OpAuth {
			return true
		}
	}
	return false
}

// checkAuth: within every window, no client operation (reads and writes
// alike: every client runs as WorkloadUser) invoked at or after its start
// and completed by its end may have succeeded; and some must have been
// refused with PERMISSION_DENIED there, else the revocation did not bite.
// A revocation that was never acknowledged has no bound to hold the
// server to; it fails the checker too, since it proves nothing.
func checkAuth(ix *index, r *CheckResult) {
	var windows []authWindow
	armed := false
	for i := range ix.h.Ops {
		o := &ix.h.Ops[i]
		if o.F != OpAuth {
			continue
		}
		switch {
		case strings.HasPrefix(o.Value, authArmed):
			armed = true
		case o.Value == authRevoke && o.Type == OK:
			windows = append(windows, authWindow{revoke: o, from: o.End + o.MaxStaleness*int64(time.Millisecond), to: ix.end})
		case o.Value == authRevoke:
			r.fail(o.Key, "a revocation was never acknowledged: "+o.Error, o)
		case o.Value == authGrant && len(windows) > 0 && windows[len(windows)-1].grant == nil:
			w := &windows[len(windows)-1]
			w.grant, w.to = o, o.Start
		}
	}
	if armed && len(windows) == 0 {
		r.fail("", "the auth-revoke nemesis was armed but no revocation was acknowledged")
	}
	refusals := map[rpctypes.Reason]int{}
	for wi, w := range windows {
		if w.to <= w.from {
			r.fail("", "revocation "+fmtNanos(w.revoke.End)+" was granted back before its bound passed: nothing to check", w.revoke, w.grant)
			continue
		}
		denied, graceOK := 0, 0
		for _, o := range ix.ops {
			if o.Process < 0 {
				continue
			}
			if o.Type == OK && o.Start >= w.revoke.End && o.Start < w.from {
				graceOK++ // allowed: a lagging node within the bound
			}
			if o.Start < w.from || o.End > w.to {
				continue
			}
			r.Checked++
			if o.Type == OK {
				r.fail(o.Key, "succeeded after the revocation's bound and before the grant: "+o.String(), w.revoke, o)
				continue
			}
			for _, reason := range []rpctypes.Reason{rpctypes.ReasonPermissionDenied, rpctypes.ReasonUnauthenticated, rpctypes.ReasonAuthStale} {
				if strings.Contains(o.Error, string(reason)) {
					refusals[reason]++
					if reason == rpctypes.ReasonPermissionDenied {
						denied++
					}
					break
				}
			}
		}
		if denied == 0 {
			r.fail("", "revocation "+fmtNanos(w.revoke.End)+": no operation refused with PERMISSION_DENIED between its bound and the grant (the nemesis did not bite)", w.revoke, w.grant)
		}
		r.note("revocation %d: acknowledged at %s, bound %dms, window [%s, %s]: %d ops refused with PERMISSION_DENIED; %d succeeded within the bound",
			wi+1, fmtNanos(w.revoke.End), w.revoke.MaxStaleness, fmtNanos(w.from), fmtNanos(w.to), denied, graceOK)
	}
	if len(refusals) > 0 {
		r.note("refusals in the windows by reason: %v", refusals)
	}
}
