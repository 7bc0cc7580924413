package jepsen

import (
	"strings"
	"testing"
	"time"
)

// TestSuite_TLSAuthRevoke is the short suite with TLS on every link and
// auth on: 3 nodes, 30 seconds of traffic as user jepsen over gRPC and
// HTTPS, one revocation of its role (auth-revoke) beside partitions of one
// node, then every checker, the auth checker among them.
func TestSuite_TLSAuthRevoke(t *testing.T) {
	rep := runSuite(t, Config{
		Nodes:    3,
		Duration: 30 * time.Second,
		Nemeses:  []string{NemAuthRevoke, NemIsolate},
		Seed:     20261203,
		TLS:      true,
		Schedule: Schedule{HealthyMin: 3 * time.Second, HealthyMax: 5 * time.Second, FaultMin: 3 * time.Second, FaultMax: 5 * time.Second},
	})
	var auth *CheckResult
	for _, r := range rep.Results {
		if r.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v; notes %v", r.Checker, r.Verdict, r.ViolationCount, r.Violations[:min(3, len(r.Violations))], r.Notes)
		}
		if r.Checker == CheckAuth {
			auth = r
		}
	}
	if auth == nil || auth.Checked == 0 {
		t.Fatalf("the auth checker did not run or checked nothing: %+v", auth)
	}
	t.Logf("auth checker: %d ops in the windows; %v", auth.Checked, auth.Notes)
	// Both APIs went through TLS as the workload's user: each has
	// successes, and each was refused for permission in the window.
	okBy, deniedBy := map[string]int{}, map[string]int{}
	for _, o := range rep.History.Ops {
		if o.Process < 0 {
			continue
		}
		switch {
		case o.Type == OK:
			okBy[o.API]++
		case strings.Contains(o.Error, "PERMISSION_DENIED"):
			deniedBy[o.API]++
		}
	}
	for _, api := range []string{APIGRPC, APIHTTP} {
		if okBy[api] == 0 || deniedBy[api] == 0 {
			t.Errorf("%s: %d ops succeeded and %d were refused with PERMISSION_DENIED; want both", api, okBy[api], deniedBy[api])
		}
	}
}
