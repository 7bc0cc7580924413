package replication_test

import (
	"fmt"
	"testing"
	"time"
)

// TestSession_ReadYourWritesAcrossASplitOnALaggingReplica: a client wrote
// a key after its range split, so the write is in the new range. A replica
// that has not applied the split yet still holds the key at its old value,
// and the token's entry for the old range is met there: it must catch up
// past the split (and serve the new value from the new range) or refuse,
// never answer the old value.
func TestSession_ReadYourWritesAcrossASplitOnALaggingReplica(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	// The lagging node leads neither the user range nor the meta range, so
	// that the split can allocate its range id while it is down.
	b := -1
	for i, n := range c.nodes {
		leads := false
		for _, s := range n.Shards() {
			leads = leads || s.IsLeader()
		}
		if i != l && !leads {
			b = i
		}
	}
	if b < 0 {
		t.Fatal("every node leads a range")
	}
	before := c.mustPut(l, "m", "m1").Header
	c.mustGet(b, "m", "m1", sessionRead(before.SessionToken)) // b has applied the write
	c.stop(b)
	sp := c.split(l, "h")
	after := c.mustPut(l, "m", "m2").Header
	if after.RangeId != sp.Right.Id {
		t.Fatalf("write went to range %d; want the new range %d", after.RangeId, sp.Right.Id)
	}
	tok := fmt.Sprintf("%d:%d,%d:%d", before.RangeId, before.Revision, after.RangeId, after.Revision)
	c.start(b)
	// The promise is about values: a refusal (not caught up, or no leader
	// known yet right after the restart) is allowed and retried; an old
	// value never is.
	var last error
	for attempt := 0; attempt < 100; attempt++ {
		resp, err := c.get(b, "m", sessionRead(tok))
		switch {
		case err == nil && string(resp.Kv.Value) == "m2":
			t.Logf("attempt %d: served m2 from range %d", attempt, resp.Header.RangeId)
			return
		case err == nil:
			t.Fatalf("session read with %s on the lagging n%d returned %q from range %d at %d; want m2 (read your writes)",
				tok, b+1, resp.Kv.Value, resp.Header.RangeId, resp.Header.AppliedIndex)
		}
		if last == nil || err.Error() != last.Error() {
			t.Logf("attempt %d: %v", attempt, err)
		}
		last = err
		time.Sleep(100 * time.Millisecond) // a refusal is immediate: pace the retries
	}
	t.Fatalf("the restarted replica never served the session read; last: %v", last)
}
