package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// TestKvctl_TxnAcrossRangesEndToEnd follows the README's transfer against
// a real node: two accounts in two ranges (split first), a transfer that
// commits in both or neither, the same transfer again failing its
// compares, txn status of the committed one, revision compares taken from
// get -w json, and a scan across the ranges refused as CROSS_RANGE.
func TestKvctl_TxnAcrossRangesEndToEnd(t *testing.T) {
	ep := startAuthNode(t) // auth stays off
	harness.Eventually(t, "the node serves writes", 30*time.Second, func() bool {
		return kvctl(t, invocation{}, at(ep, "put", "acct/a", "100")...).code == exitOK
	})
	mustRun(t, invocation{}, at(ep, "put", "acct/b", "0")...)
	mustRun(t, invocation{}, at(ep, "range", "split", "acct/b")...)
	rangeOf := func(key string) (uint64, uint64) {
		o := decodeLines(t, mustRun(t, invocation{}, at(ep, "-w", "json", "get", key)...))[0]
		return uint64(o["range_id"].(float64)), uint64(o["revision"].(float64))
	}
	ra, _ := rangeOf("acct/a")
	rb, _ := rangeOf("acct/b")
	if ra == rb {
		t.Fatalf("acct/a and acct/b are both in range %d after the split", ra)
	}

	const transfer = "value(\"acct/a\") = \"100\"\nvalue(\"acct/b\") = \"0\"\n\nput acct/a 70\nput acct/b 30\n\nget acct/a\n"
	objs := decodeLines(t, mustRun(t, invocation{stdin: transfer}, at(ep, "-w", "json", "txn", "--id", "transfer-1")...))
	if len(objs) != 1 || objs[0]["succeeded"] != true || objs[0]["id"] != "transfer-1" {
		t.Fatalf("transfer printed %v; want one object, succeeded, id transfer-1", objs)
	}
	if hs, _ := objs[0]["headers"].([]any); len(hs) != 2 {
		t.Errorf("transfer headers %v; want one per range written (2)", objs[0]["headers"])
	}
	for key, want := range map[string]string{"acct/a": "70", "acct/b": "30"} {
		if got := mustRun(t, invocation{}, at(ep, "get", key)...); got != want {
			t.Errorf("get %s = %q after the transfer; want %q", key, got, want)
		}
	}

	// The same transfer again: its compares fail, the failure branch reads.
	if got := mustRun(t, invocation{stdin: transfer}, at(ep, "txn")...); got != "FAILURE\n\nacct/a\n70\n" {
		t.Errorf("second transfer printed %q; want FAILURE and acct/a's value", got)
	}
	if got := mustRun(t, invocation{}, at(ep, "txn", "status", "transfer-1", "--key", "acct/a")...); got != "COMMITTED SUCCESS\n" {
		t.Errorf("txn status transfer-1 = %q; want COMMITTED SUCCESS", got)
	}

	// Revision compares, as a read-modify-write would write them.
	ra, ia := rangeOf("acct/a")
	rb, ib := rangeOf("acct/b")
	rmw := fmt.Sprintf("revision(\"acct/a\") = %d:%d\nrev(\"acct/b\") = \"%d:%d\"\n\nput acct/a 60\nput acct/b 40\n", ra, ia, rb, ib)
	if got := mustRun(t, invocation{stdin: rmw}, at(ep, "txn")...); got != "SUCCESS\n\nOK\n\nOK\n" {
		t.Errorf("revision-checked transfer printed %q; want SUCCESS", got)
	}
	if got := mustRun(t, invocation{stdin: rmw}, at(ep, "txn")...); !strings.HasPrefix(got, "FAILURE") {
		t.Errorf("the same revisions again printed %q; want FAILURE (both keys were written since)", got)
	}
	total := 0
	for _, key := range []string{"acct/a", "acct/b"} {
		var n int
		fmt.Sscan(mustRun(t, invocation{}, at(ep, "get", key)...), &n)
		total += n
	}
	if total != 100 {
		t.Errorf("the accounts hold %d in all; want 100", total)
	}

	r := kvctl(t, invocation{stdin: "\nscan acct/\n"}, at(ep, "txn")...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "CROSS_RANGE") {
		t.Errorf("a scan over both ranges: exit %d, stderr %q; want %d and CROSS_RANGE", r.code, r.stderr, exitUsage)
	}
}
