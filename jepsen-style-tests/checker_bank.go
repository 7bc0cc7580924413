package jepsen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// CheckBank is the bank checker's name in summary.json.
const CheckBank = "bank"

// bankInput is a bank operation over account positions: a transfer's
// compared and new balances, or nothing (a read-all).
type bankInput struct {
	transfer bool
	accounts []int
	compared []int64
	writes   []int64
	desc     string
}

// bankOutput: a read-all's balances; a transfer's answer.
type bankOutput struct {
	balances  []int64
	succeeded bool
	unknown   bool
}

// bankModel is the whole bank as one state, the balances by account
// position. A transfer applies when both compared balances hold (its
// compares), and answered "not succeeded" only when one does not; one of
// unknown outcome may apply (porcupine may also place it after
// everything, where it is as good as not applied); a read-all returns the
// state.
var bankModel = porcupine.Model{
	Init: func() any { return []int64(nil) }, // replaced per history: see bankInit
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.([]int64), input.(bankInput), output.(bankOutput)
		if !in.transfer {
			return slices.Equal(s, out.balances), s
		}
		hold := true
		for i, a := range in.accounts {
			hold = hold && s[a] == in.compared[i]
		}
		switch {
		case hold && (out.succeeded || out.unknown):
			next := slices.Clone(s)
			for i, a := range in.accounts {
				next[a] = in.writes[i]
			}
			return true, next
		case hold:
			return false, s
		default:
			return !out.succeeded || out.unknown, s
		}
	},
	Equal: func(a, b any) bool { return slices.Equal(a.([]int64), b.([]int64)) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(bankInput), output.(bankOutput)
		if !in.transfer {
			return fmt.Sprintf("read-all -> %v", out.balances)
		}
		res := "not applied"
		switch {
		case out.unknown:
			res = "?"
		case out.succeeded:
			res = "ok"
		}
		return in.desc + " -> " + res
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.([]int64)) },
	DescribeOperationMetadata: func(info any) string {
		if s, ok := info.(string); ok {
			return s
		}
		return ""
	},
}

// checkBank holds the bank to its promises:
//   - every read-all that succeeded sees every account, no balance
//     negative, and the total the accounts started with: a read of half a
//     transfer (or money made or lost) breaks it;
//   - the transfers and read-alls are linearizable over the whole bank as
//     one state (porcupine): ok transfers applied (or, compares failed,
//     not) between invocation and answer, ones of unknown outcome possibly
//     applied, those resolved by TxnStatus applied (or not) by the time it
//     answered;
//   - after the heal a read-all succeeded within 15 s (locks or pending
//     transactions left behind would have blocked it).
func checkBank(ix *index, r *CheckResult, timeout time.Duration) {
	var init *Op
	for _, o := range ix.ops {
		if o.F == OpBankInit && o.Type == OK {
			init = o
		}
	}
	if init == nil {
		r.fail("", "no "+OpBankInit+": the accounts were never set up")
		return
	}
	accounts := sortedKeys(init.Writes)
	pos := map[string]int{}
	initial := make([]int64, len(accounts))
	var total int64
	for i, k := range accounts {
		pos[k] = i
		v, err := strconv.ParseInt(init.Writes[k], 10, 64)
		if err != nil {
			r.fail(k, fmt.Sprintf("initial balance %q does not parse", init.Writes[k]), init)
			return
		}
		initial[i], total = v, total+v
	}
	statuses := txnStatuses(ix)
	var ops []porcupine.Operation
	infEnd := ix.end + int64(time.Second)
	reads, finalOK := 0, false
	for _, o := range ix.ops {
		switch o.F {
		case OpReadAll:
			if o.Type != OK {
				continue
			}
			reads++
			r.Checked++
			finalOK = finalOK || o.Process == FinalProcess
			bal, ok := bankBalances(r, o, accounts, total)
			if !ok {
				continue
			}
			ops = append(ops, porcupine.Operation{ClientId: clientID(o.Process), Input: bankInput{}, Output: bankOutput{balances: bal}, Call: o.Start, Return: o.End, Metadata: o.String()})
		case OpTransfer:
			fate := fateOf(o, statuses)
			if !fate.committed && !fate.unknown {
				continue
			}
			r.Checked++
			in := bankInput{transfer: true}
			var parts []string
			for _, k := range sortedKeys(o.Writes) {
				p, known := pos[k]
				c, err1 := strconv.ParseInt(o.Compared[k], 10, 64)
				w, err2 := strconv.ParseInt(o.Writes[k], 10, 64)
				if !known || err1 != nil || err2 != nil {
					r.fail(k, fmt.Sprintf("transfer %s on %s: not an account or balances %q -> %q do not parse", o.TxnID, k, o.Compared[k], o.Writes[k]), o)
					continue
				}
				in.accounts, in.compared, in.writes = append(in.accounts, p), append(in.compared, c), append(in.writes, w)
				parts = append(parts, fmt.Sprintf("%s %d->%d", k, c, w))
			}
			in.desc = "transfer " + strings.Join(parts, ", ")
			out := bankOutput{succeeded: fate.succeeded, unknown: fate.unknown}
			end := fate.end
			if fate.unknown {
				end = infEnd
			}
			ops = append(ops, porcupine.Operation{ClientId: clientID(o.Process), Input: in, Output: out, Call: o.Start, Return: end, Metadata: o.String()})
		}
	}
	if hasOp(ix.h, OpTransfer) && !finalOK {
		r.fail("", "no read-all succeeded within 15 s after the heal: locks or pending transactions left behind?")
	}
	model := bankModel
	model.Init = func() any { return slices.Clone(initial) }
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	switch res {
	case porcupine.Illegal:
		r.fail("", fmt.Sprintf("the %d transfers and read-alls are not linearizable over the bank as one state (see the timeline)", len(ops)))
	case porcupine.Unknown:
		if r.Verdict == Pass {
			r.Verdict = Unknown
		}
		r.note("porcupine could not decide the bank's %d ops within %v", len(ops), timeout)
	}
	if res != porcupine.Ok {
		info.AddAnnotations(faultAnnotations(ix.h))
		r.timeline = func(path string) error { return porcupine.VisualizePath(model, info, path) }
	}
	r.note("%d accounts, total %d; %d read-alls ok (the final one %v); %s", len(accounts), total, reads, finalOK, txnCounts(ix, OpTransfer, statuses))
	probeNotes(ix, r, BankPrefix)
}

// bankBalances checks one read-all: every account read, a number, not
// negative, the total kept. It returns the balances by position and
// whether they passed.
func bankBalances(r *CheckResult, o *Op, accounts []string, total int64) ([]int64, bool) {
	bal := make([]int64, len(accounts))
	var sum int64
	ok := true
	for i, k := range accounts {
		v, found := o.Reads[k]
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case !found || v == "":
			r.fail(k, fmt.Sprintf("read-all %s: account %s missing", o.TxnID, k), o)
			ok = false
		case err != nil:
			r.fail(k, fmt.Sprintf("read-all %s: account %s holds %q, not a balance", o.TxnID, k, v), o)
			ok = false
		case n < 0:
			r.fail(k, fmt.Sprintf("read-all %s: account %s is negative (%d)", o.TxnID, k, n), o)
			ok = false
		}
		bal[i], sum = n, sum+n
	}
	if ok && sum != total {
		r.fail("", fmt.Sprintf("read-all %s sums to %d, not %d: it saw part of a transfer (or money was made or lost): %v", o.TxnID, sum, total, o.Reads), o)
		ok = false
	}
	return bal, ok
}
