package jepsen

import (
	"strings"
	"testing"
)

const (
	lc1 = LeaseProcess
	lw1 = WatcherProcess - 5 // the watcher on LeasePrefix
)

func leaseGet(proc int, key string, missing bool, start, end int64) Op {
	o := Op{Process: proc, F: OpLeaseGet, Key: key, Level: Linearizable, Missing: missing}
	if !missing {
		o.Value = "v"
	}
	return at(o, start, end)
}

// leaseBase is an honest lease history: lease 7 (TTL 2 s) kept alive
// once at 1 s, so alive until 3 s, its key read present at 1.5 s and
// gone at 6.5 s (past 1.01 + 2 + 3 s); lease 8 revoked at 0.5 s; a watcher
// on lease/ sees both keys put and deleted with their causes.
func leaseBase() []Op {
	return []Op{
		at(Op{Process: lw1, F: OpWatch, Key: LeasePrefix, Cursor: "3:0"}, 0, 5),
		at(Op{Process: lc1, F: OpLeaseGrant, Lease: 7, TTL: 2}, 0, 10),
		at(Op{Process: lc1, F: OpLeasePut, Key: "lease/7/0", Value: "v1", Lease: 7, RangeID: 3, Revision: 5}, 20, 30),
		msg(lw1, 31, "3:5", WatchEvent{Type: EventPut, Key: "lease/7/0", Value: "v1", Range: 3, Index: 5, Lease: 7}),
		at(Op{Process: lc1 - 1, F: OpLeaseGrant, Lease: 8, TTL: 5}, 100, 110),
		at(Op{Process: lc1 - 1, F: OpLeasePut, Key: "lease/8/0", Value: "v2", Lease: 8, RangeID: 3, Revision: 6}, 120, 130),
		msg(lw1, 131, "3:6", WatchEvent{Type: EventPut, Key: "lease/8/0", Value: "v2", Range: 3, Index: 6, Lease: 8}),
		at(Op{Process: lc1 - 1, F: OpLeaseRevoke, Lease: 8}, 500, 520),
		msg(lw1, 530, "3:7", WatchEvent{Type: EventDelete, Key: "lease/8/0", Range: 3, Index: 7, Cause: CauseLeaseRevoked, Lease: 8}),
		at(Op{Process: lc1, F: OpLeaseKeepAlive, Lease: 7, TTL: 2}, 1000, 1010),
		leaseGet(lc1, "lease/7/0", false, 1500, 1510),
		msg(lw1, 4000, "3:8", WatchEvent{Type: EventDelete, Key: "lease/7/0", Range: 3, Index: 8, Cause: CauseLeaseExpired, Lease: 7}),
		leaseGet(lc1, "lease/7/0", true, 6500, 6510),
		leaseGet(FinalProcess, "lease/7/0", true, 9000, 9010),
		leaseGet(FinalProcess, "lease/8/0", true, 9000, 9010),
	}
}

func TestCheckLease(t *testing.T) {
	base := leaseBase()
	fault := []Fault{{Name: NemPartition, Desc: "halves", Start: 5000 * ms, End: 7000 * ms}}
	for _, tc := range []struct {
		name   string
		ops    []Op
		faults []Fault
		want   string // "" passes; else a violation containing it
	}{
		{"honest history", base, nil, ""},
		{"a fault moves the bound", edit(base, 12, ptr(leaseGet(lc1, "lease/7/0", false, 6500, 6510))), fault, ""},
		{"key deleted early", edit(base, -1, nil, leaseGet(lc1, "lease/7/0", true, 2000, 2010)), nil, "gone at a read"},
		{"key surviving past the bound", edit(base, 12, ptr(leaseGet(lc1, "lease/7/0", false, 6500, 6510))), nil, "past lease 7's end"},
		{"key surviving the end", edit(base, 13, ptr(leaseGet(FinalProcess, "lease/7/0", false, 9000, 9010))), nil, "past lease 7's end"},
		{"key surviving its revoke", edit(base, -1, nil, leaseGet(lc1, "lease/8/0", false, 600, 610)), nil, "revoke was acknowledged"},
		{"keepalive refused early", edit(base, -1, nil, at(Op{Process: lc1, F: OpLeaseKeepAlive, Lease: 7, Type: Fail, Error: "NotFound LEASE_NOT_FOUND: gone"}, 2000, 2010)), nil, "refused with LEASE_NOT_FOUND"},
		{"watch sees an early expiry", edit(base, 11, ptr(msg(lw1, 2500, "3:8", WatchEvent{Type: EventDelete, Key: "lease/7/0", Range: 3, Index: 8, Cause: CauseLeaseExpired, Lease: 7}))), nil, "deleted by LEASE_EXPIRED"},
		{"revoked cause without a revoke", edit(base, 8, ptr(msg(lw1, 300, "3:7", WatchEvent{Type: EventDelete, Key: "lease/8/0", Range: 3, Index: 7, Cause: CauseLeaseRevoked, Lease: 8}))), nil, "before any revoke"},
		{"one id granted twice", edit(base, -1, nil, at(Op{Process: lc1 - 1, F: OpLeaseGrant, Lease: 7, TTL: 2}, 2000, 2010)), nil, "lease id 7 granted twice"},
		{"delete not seen by the watcher", edit(base, 11, ptr(msg(lw1, 4000, "3:8"))), nil, "never saw its lease delete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := checkOps(tc.ops, tc.faults)
			r := res[CheckLease]
			if r == nil {
				t.Fatal("no lease checker result")
			}
			if w := res[CheckWatch]; w == nil || w.Failing() {
				t.Errorf("the watch checker fails: %+v", w)
			}
			if tc.want == "" {
				if r.Failing() {
					t.Fatalf("verdict %s, violations %+v", r.Verdict, r.Violations)
				}
				if r.Checked < 4 {
					t.Errorf("checked %d reads, want at least 4 (notes %v)", r.Checked, r.Notes)
				}
				return
			}
			if !r.Failing() {
				t.Fatalf("passed; notes %v", r.Notes)
			}
			found := false
			for _, v := range r.Violations {
				found = found || strings.Contains(v.Msg, tc.want)
			}
			if !found {
				t.Errorf("no violation mentions %q: %+v", tc.want, r.Violations)
			}
		})
	}
}

// TestCheckWatch_LeaseDeleteWithoutCause: a lease key's delete must say
// which lease deleted it and why.
func TestCheckWatch_LeaseDeleteWithoutCause(t *testing.T) {
	ops := edit(leaseBase(), 11, ptr(msg(lw1, 4000, "3:8", WatchEvent{Type: EventDelete, Key: "lease/7/0", Range: 3, Index: 8})))
	r := checkOps(ops, nil)[CheckWatch]
	if !r.Failing() || !strings.Contains(r.Violations[0].Msg, "without a lease cause") {
		t.Fatalf("want a violation for the delete without a cause: %+v", r)
	}
}

// TestCheckWatch_OneEntryManyKeys: a revoke deletes its lease's keys in
// one entry, so their events share an index; delivered again, they are
// duplicates.
func TestCheckWatch_OneEntryManyKeys(t *testing.T) {
	del := func(key string) WatchEvent {
		return WatchEvent{Type: EventDelete, Key: key, Range: 3, Index: 7, Cause: CauseLeaseRevoked, Lease: 8}
	}
	ops := []Op{
		at(Op{Process: lw1, F: OpWatch, Key: LeasePrefix, Cursor: "3:0"}, 0, 5),
		at(Op{Process: lc1, F: OpLeaseGrant, Lease: 8, TTL: 5}, 100, 110),
		at(Op{Process: lc1, F: OpLeasePut, Key: "lease/8/0", Value: "v1", Lease: 8, RangeID: 3, Revision: 5}, 120, 130),
		at(Op{Process: lc1, F: OpLeasePut, Key: "lease/8/1", Value: "v2", Lease: 8, RangeID: 3, Revision: 6}, 130, 140),
		msg(lw1, 141, "3:6", WatchEvent{Type: EventPut, Key: "lease/8/0", Value: "v1", Range: 3, Index: 5, Lease: 8},
			WatchEvent{Type: EventPut, Key: "lease/8/1", Value: "v2", Range: 3, Index: 6, Lease: 8}),
		at(Op{Process: lc1, F: OpLeaseRevoke, Lease: 8}, 500, 520),
		msg(lw1, 530, "3:7", del("lease/8/0"), del("lease/8/1")),
	}
	if r := checkOps(ops, nil)[CheckWatch]; r.Failing() {
		t.Fatalf("two deletes of one entry: %+v", r.Violations)
	}
	again := append(ops, msg(lw1, 540, "3:7", del("lease/8/1")))
	if r := checkOps(again, nil)[CheckWatch]; !r.Failing() || !strings.Contains(r.Violations[0].Msg, "delivered twice") {
		t.Fatalf("a delete delivered again passed: %+v", r)
	}
}
