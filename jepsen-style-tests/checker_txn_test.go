package jepsen

import (
	"slices"
	"strings"
	"testing"
)

// Hand-made bank and append histories: an honest one of each, and each
// promise broken once. Times are in milliseconds.

func bankOps(extra ...Op) []Op {
	init := map[string]string{"bank/0": "100", "bank/1": "100", "bank/2": "100", "bank/3": "100"}
	ops := []Op{
		at(Op{Process: TxnSetupProcess, F: OpBankInit, TxnID: "bank-init-0", Writes: init}, 0, 1),
		// Ok: 5 from 0 to 1.
		at(Op{Process: 0, F: OpTransfer, Key: "bank/0", TxnID: "t1", Succeeded: true,
			Compared: map[string]string{"bank/0": "100", "bank/1": "100"}, Writes: map[string]string{"bank/0": "95", "bank/1": "105"}}, 2, 4),
		at(Op{Process: 1, F: OpReadAll, TxnID: "r1", Reads: map[string]string{"bank/0": "95", "bank/1": "105", "bank/2": "100", "bank/3": "100"}}, 5, 6),
		// Compares failed: nothing moved.
		at(Op{Process: 0, F: OpTransfer, Key: "bank/0", TxnID: "t2",
			Compared: map[string]string{"bank/0": "100", "bank/2": "100"}, Writes: map[string]string{"bank/0": "98", "bank/2": "102"}}, 7, 8),
		// Unknown, resolved committed after the heal.
		at(Op{Process: 0, F: OpTransfer, Key: "bank/2", TxnID: "t3", Type: Info, Error: "Unavailable INDETERMINATE",
			Compared: map[string]string{"bank/2": "100", "bank/3": "100"}, Writes: map[string]string{"bank/2": "90", "bank/3": "110"}}, 9, 10),
		// Unknown, resolved by the client as aborted.
		at(Op{Process: 1, F: OpTransfer, Key: "bank/1", TxnID: "t4", Type: Fail, Resolved: TxnAborted,
			Compared: map[string]string{"bank/1": "105", "bank/3": "100"}, Writes: map[string]string{"bank/1": "100", "bank/3": "105"}}, 9, 12),
		// Unknown, resolved by the client as committed.
		at(Op{Process: 1, F: OpTransfer, Key: "bank/0", TxnID: "t5", Resolved: TxnCommitted, Succeeded: true,
			Compared: map[string]string{"bank/0": "95", "bank/1": "105"}, Writes: map[string]string{"bank/0": "94", "bank/1": "106"}}, 13, 15),
	}
	ops = append(ops, extra...)
	return append(ops,
		at(Op{Process: FinalProcess, F: OpReadAll, TxnID: "final", Reads: map[string]string{"bank/0": "94", "bank/1": "106", "bank/2": "90", "bank/3": "110"}}, 20, 21),
		at(Op{Process: FinalProcess, F: OpTxnStatus, TxnID: "t3", Key: "bank/2", Value: TxnCommitted, Succeeded: true}, 22, 23),
	)
}

func TestCheckBank(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		want string // "" passes; else a violation containing it
	}{
		{"honest", bankOps(), ""},
		{"total wrong", bankOps(at(Op{Process: 2, F: OpReadAll, TxnID: "half",
			Reads: map[string]string{"bank/0": "95", "bank/1": "100", "bank/2": "100", "bank/3": "100"}}, 5, 6)), "sums to 395, not 400"},
		{"negative", bankOps(at(Op{Process: 2, F: OpReadAll, TxnID: "neg",
			Reads: map[string]string{"bank/0": "-5", "bank/1": "205", "bank/2": "100", "bank/3": "100"}}, 5, 6)), "negative"},
		{"missing account", bankOps(at(Op{Process: 2, F: OpReadAll, TxnID: "miss",
			Reads: map[string]string{"bank/0": "95", "bank/1": "105", "bank/2": "100"}}, 5, 6)), "account bank/3 missing"},
		// Totals fine, but it began after t1 was acknowledged and misses it.
		{"stale read-all", bankOps(at(Op{Process: 2, F: OpReadAll, TxnID: "stale",
			Reads: map[string]string{"bank/0": "100", "bank/1": "100", "bank/2": "100", "bank/3": "100"}}, 5, 6)), "not linearizable"},
		// A transfer that failed (TXN_CONFLICT) but whose effect shows.
		{"failed transfer applied", bankOps(
			at(Op{Process: 2, F: OpTransfer, Key: "bank/2", TxnID: "t9", Type: Fail, Error: "Aborted TXN_CONFLICT",
				Compared: map[string]string{"bank/2": "100", "bank/3": "100"}, Writes: map[string]string{"bank/2": "99", "bank/3": "101"}}, 5, 6),
			at(Op{Process: 3, F: OpReadAll, TxnID: "r9", Reads: map[string]string{"bank/0": "95", "bank/1": "105", "bank/2": "99", "bank/3": "101"}}, 7, 8)),
			"not linearizable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkOps(tt.ops, nil)[CheckBank]
			if r == nil {
				t.Fatal("the bank checker did not run")
			}
			assertVerdict(t, r, tt.want)
			if tt.want == "" && r.Checked < 6 {
				t.Errorf("checked %d ops, want at least 6", r.Checked)
			}
		})
	}
	// No read-all after the heal: locks may be left.
	ops := bankOps()
	ops = slices.DeleteFunc(ops, func(o Op) bool { return o.Process == FinalProcess && o.F == OpReadAll })
	assertVerdict(t, checkOps(ops, nil)[CheckBank], "no read-all succeeded within 15 s")
}

// assertVerdict: want "" is a pass, else a failure with a violation
// containing want.
func assertVerdict(t *testing.T, r *CheckResult, want string) {
	t.Helper()
	if want == "" {
		if r.Failing() {
			t.Fatalf("want pass, got %s: %+v; notes %v", r.Verdict, r.Violations, r.Notes)
		}
		return
	}
	if r.Verdict != Failed {
		t.Fatalf("want a violation %q, got %s; notes %v", want, r.Verdict, r.Notes)
	}
	for _, v := range r.Violations {
		if strings.Contains(v.Msg, want) {
			return
		}
	}
	t.Fatalf("no violation contains %q: %+v", want, r.Violations)
}

func ltx(proc int, id string, compared, writes, reads map[string]string, succeeded bool, start, end int64) Op {
	return at(Op{Process: proc, F: OpListTxn, TxnID: id, Compared: compared, Writes: writes, Reads: reads, Succeeded: succeeded}, start, end)
}

type kv = map[string]string

// appendOps: a appends to list/0 and list/1; b reads both and appends to
// list/2; c appends to list/0 after a; an unknown d never applied; the
// final read.
func appendOps(final kv, extra ...Op) []Op {
	ops := []Op{
		ltx(0, "a", kv{"list/0": "", "list/1": ""}, kv{"list/0": "0.0", "list/1": "0.0"}, kv{}, true, 1, 2),
		ltx(1, "b", kv{"list/2": ""}, kv{"list/2": "1.0"}, kv{"list/0": "0.0", "list/1": "0.0"}, true, 3, 4),
		ltx(0, "c", kv{"list/0": "0.0"}, kv{"list/0": "0.1"}, kv{"list/2": "1.0"}, true, 5, 6),
		at(Op{Process: 1, F: OpListTxn, TxnID: "d", Type: Info, Compared: kv{"list/3": ""}, Writes: kv{"list/3": "1.1"}}, 7, 8),
	}
	ops = append(ops, extra...)
	return append(ops, ltx(FinalProcess, "final", nil, nil, final, false, 20, 21))
}

func goodFinal() kv { return kv{"list/0": "0.0,0.1", "list/1": "0.0", "list/2": "1.0", "list/3": ""} }

func TestCheckAppend(t *testing.T) {
	with := func(k, v string) kv {
		f := goodFinal()
		f[k] = v
		return f
	}
	two := goodFinal()
	two["list/4"], two["list/5"] = "3.0", "4.0"
	tests := []struct {
		name string
		ops  []Op
		want string
	}{
		{"honest", appendOps(goodFinal()), ""},
		{"lost append", appendOps(with("list/2", "")), "lost append"},
		{"duplicated append", appendOps(with("list/0", "0.0,0.1,0.1")), "duplicated append"},
		{"out of order", appendOps(goodFinal(), ltx(2, "r", nil, nil, kv{"list/0": "0.1,0.0"}, false, 7, 8)), "not a prefix"},
		{"invented element", appendOps(with("list/3", "9.9")), "which no transaction appended"},
		{"failed append seen", appendOps(goodFinal(),
			at(Op{Process: 2, F: OpListTxn, TxnID: "e", Type: Fail, Error: "Aborted TXN_CONFLICT", Compared: kv{"list/4": ""}, Writes: kv{"list/4": "2.0"}}, 7, 8),
			ltx(3, "r", nil, nil, kv{"list/4": "2.0"}, false, 9, 10)), "failed or was aborted"},
		// Concurrent with a (so not stale), it sees a's append to list/0
		// but not the one to list/1.
		{"partial read", appendOps(goodFinal(), ltx(2, "r", nil, nil, kv{"list/0": "0.0", "list/1": ""}, false, 1, 3)), "read of part of a transaction"},
		{"stale read", appendOps(goodFinal(), ltx(2, "r", nil, nil, kv{"list/2": ""}, false, 7, 8)), "stale read"},
		// x and y each read the other's append: G1c.
		{"G1c", appendOps(two,
			ltx(3, "x", kv{"list/4": ""}, kv{"list/4": "3.0"}, kv{"list/5": "4.0"}, true, 9, 12),
			ltx(4, "y", kv{"list/5": ""}, kv{"list/5": "4.0"}, kv{"list/4": "3.0"}, true, 9, 12)), "G1c"},
		// Write skew: each read the other's list empty and appended to
		// its own: only anti-dependencies make the cycle.
		{"G2", appendOps(two,
			ltx(3, "x", kv{"list/4": ""}, kv{"list/4": "3.0"}, kv{"list/5": ""}, true, 9, 12),
			ltx(4, "y", kv{"list/5": ""}, kv{"list/5": "4.0"}, kv{"list/4": ""}, true, 9, 12)), "G2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkOps(tt.ops, nil)[CheckAppend]
			if r == nil {
				t.Fatal("the append checker did not run")
			}
			assertVerdict(t, r, tt.want)
			if tt.want == "" && r.Checked < 3 {
				t.Errorf("checked %d reads, want at least 3", r.Checked)
			}
		})
	}
	// No final read: locks may be left.
	ops := appendOps(goodFinal())
	assertVerdict(t, checkOps(ops[:len(ops)-1], nil)[CheckAppend], "no read of every list succeeded")
}

// A kill-coordinator probe that never got through with no other fault
// fails the checker; with a partition beside it, it is only noted.
func TestCheckProbe(t *testing.T) {
	probe := at(Op{Process: KillCoordProcess, F: OpTxnProbe, Key: "list/0", TxnID: "kc", Type: Fail}, 9, 40)
	kc := Fault{Name: NemKillCoord, Start: 9 * ms, End: 15 * ms}
	r := checkOps(appendOps(goodFinal(), probe), []Fault{kc})[CheckAppend]
	assertVerdict(t, r, "stayed unreadable")
	r = checkOps(appendOps(goodFinal(), probe), []Fault{kc, {Name: NemPartition, Start: 10 * ms, End: 30 * ms}})[CheckAppend]
	assertVerdict(t, r, "")
}

func TestTxnWorkloadNames(t *testing.T) {
	got, err := ParseWorkloads([]string{WorkloadBank, WorkloadAppend})
	if err != nil || !slices.Equal(got, []string{"bank", "append"}) {
		t.Fatalf("ParseWorkloads(bank, append) = %v, %v", got, err)
	}
	kinds, _, err := ExpandNemeses([]string{NemAll})
	if err != nil || !slices.Contains(kinds, NemKillCoord) {
		t.Fatalf("all = %v, %v: want %s in it", kinds, err, NemKillCoord)
	}
	if kinds, _, err := ExpandNemeses([]string{NemKillCoord}); err != nil || !slices.Equal(kinds, []string{NemKillCoord}) {
		t.Fatalf("kill-coordinator = %v, %v", kinds, err)
	}
}
