package jepsen

import (
	"maps"
	"slices"
	"testing"
)

// Hand-made histories for the auth checker: a revocation acknowledged at
// 110ms with a 1s bound and granted back at 3000ms, so the window in which
// every op must be refused is [1110ms, 3000ms].
func TestCheckAuth(t *testing.T) {
	const denied = "PermissionDenied PERMISSION_DENIED: user jepsen may not write r/a"
	armed := Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authArmed + ": 1 revocations of role rw", Type: OK}
	revoke := Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authRevoke, Start: 100, End: 110, MaxStaleness: 1000, Type: OK}
	grant := Op{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authGrant, Start: 3000, End: 3010, Type: OK}
	put := func(v string, start, end int64, typ, err string) Op {
		return Op{Process: 1, F: OpPut, Key: RegisterPrefix + "a", Value: v, Start: start, End: end, Type: typ, Error: err, Node: "n1", API: "grpc"}
	}
	get := func(v string, start, end int64, typ, err string) Op {
		return Op{Process: 2, F: OpGet, Key: RegisterPrefix + "a", Value: v, Missing: v == "" && typ == OK, Level: Linearizable, Start: start, End: end, Type: typ, Error: err, ServedBy: "n1"}
	}
	final := Op{Process: FinalProcess, F: OpGet, Key: RegisterPrefix + "a", Value: "v1", Level: Linearizable, Start: 5000, End: 5010, Type: OK, ServedBy: "n1"}
	for _, tc := range []struct {
		name string
		ops  []Op
		// fails: the auth checker's verdict is a failure; others: the
		// other checkers fail too (nil: all of them pass).
		fails  bool
		others []string
	}{
		{"refused in the window, allowed within the bound", []Op{
			armed, put("v1", 0, 50, OK, ""), revoke,
			get("v1", 120, 130, OK, ""),         // a lagging node, within the bound
			put("v2", 1000, 1200, Fail, denied), // started within the bound: may go either way
			put("v3", 1500, 1510, Fail, denied),
			get("", 1600, 1610, Fail, "PermissionDenied PERMISSION_DENIED: user jepsen may not read r/a"),
			grant,
			get("v1", 2990, 3020, OK, ""), // completed after the grant began
			final,
		}, false, nil},
		{"a read succeeded in the window", []Op{
			armed, put("v1", 0, 50, OK, ""), revoke,
			put("v3", 1500, 1510, Fail, denied),
			get("v1", 1600, 1610, OK, ""),
			grant, final,
		}, true, nil},
		{"a write succeeded in the window", []Op{
			armed, revoke,
			put("v3", 1500, 1510, Fail, denied),
			put("v1", 1600, 1610, OK, ""),
			grant, final,
		}, true, nil},
		{"nothing refused for permission: the revocation did not bite", []Op{
			armed, put("v1", 0, 50, OK, ""), revoke,
			put("v3", 1500, 1510, Fail, "Unavailable NO_LEADER: election"),
			grant, final,
		}, true, nil},
		{"armed, never revoked", []Op{armed, put("v1", 0, 50, OK, ""), final}, true, nil},
		{"the revocation was never acknowledged", []Op{
			armed, put("v1", 0, 50, OK, ""),
			{Process: NemesisProcess, F: OpAuth, Key: WorkloadUser, Value: authRevoke, Start: 100, End: 60100, Type: Info, Error: "no leader"},
			grant, final,
		}, true, nil},
		{"never granted back: the window runs to the end", []Op{
			armed, put("v1", 0, 50, OK, ""), revoke,
			put("v3", 1500, 1510, Fail, denied),
			get("v1", 4000, 4010, OK, ""),
			final,
		}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &hist{}
			for _, o := range tc.ops {
				h.op(o)
			}
			res := expect(t, h, tc.others...)
			r := res[CheckAuth]
			if r == nil {
				t.Fatalf("no %s checker in %v", CheckAuth, slices.Sorted(maps.Keys(res)))
			}
			if r.Failing() != tc.fails {
				t.Errorf("auth verdict %s, want failing=%v; violations %+v notes %v", r.Verdict, tc.fails, r.Violations, r.Notes)
			}
		})
	}
}

// A run without the auth-revoke nemesis has no auth checker.
func TestCheckAuth_AbsentWithoutAuthEvents(t *testing.T) {
	h := &hist{}
	h.put(1, k, "a", 0, 10, OK, 5)
	if r := h.check(t)[CheckAuth]; r != nil {
		t.Errorf("auth checker ran on a history without auth events: %+v", r)
	}
}
