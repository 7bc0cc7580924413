package replication

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

func TestLeaseWrites(t *testing.T) {
	// drained reports whether drain(7) finishes without waiting.
	drained := func(w *leaseWrites) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := w.drain(ctx, 7)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("drain: %v", err)
		}
		return err == nil
	}
	for _, tc := range []struct {
		name string
		// run registers writes and returns the one whose next proposal
		// is tried after the drain.
		run         func(w *leaseWrites) *leaseWrite
		wantDrained bool
		wantPropose bool // the request's proposal after the drain is allowed
	}{
		{"nothing pending", func(w *leaseWrites) *leaseWrite { return nil }, true, true},
		{"a put checked, not proposed yet: fenced", func(w *leaseWrites) *leaseWrite {
			return w.begin(7)
		}, true, false},
		{"a put with another lease", func(w *leaseWrites) *leaseWrite {
			return w.begin(8)
		}, true, true},
		{"a transaction with both leases: fenced", func(w *leaseWrites) *leaseWrite {
			return w.begin(8, 7)
		}, true, false},
		{"a proposal in flight: waited for", func(w *leaseWrites) *leaseWrite {
			lw := w.begin(7)
			if _, ok := lw.propose(); !ok {
				t.Fatal("a proposal refused before any drain")
			}
			return lw
		}, false, false},
		{"released, its proposal in flight: waited for", func(w *leaseWrites) *leaseWrite {
			lw := w.begin(7)
			lw.propose()
			lw.release()
			return lw
		}, false, false},
		{"released, its proposal settled (twice)", func(w *leaseWrites) *leaseWrite {
			lw := w.begin(7)
			settle, _ := lw.propose()
			lw.release()
			settle()
			settle()
			return nil
		}, true, true},
		{"a proposal settled, the request still on", func(w *leaseWrites) *leaseWrite {
			lw := w.begin(7)
			settle, _ := lw.propose()
			settle()
			return lw
		}, true, false},
		{"no leases: nothing tracked", func(w *leaseWrites) *leaseWrite {
			lw := w.begin()
			if settle, ok := lw.propose(); settle != nil || !ok {
				t.Fatalf("a write with no lease: settle %v, ok %v; want none to call, allowed", settle != nil, ok)
			}
			return lw
		}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w leaseWrites
			lw := tc.run(&w)
			if got := drained(&w); got != tc.wantDrained {
				t.Errorf("drain finished at once: %v, want %v", got, tc.wantDrained)
			}
			if _, ok := lw.propose(); ok != tc.wantPropose {
				t.Errorf("a proposal after the drain allowed: %v, want %v", ok, tc.wantPropose)
			}
			if drains := w.waiting(); drains != 0 {
				t.Errorf("%d drains still counted after theirs ended", drains)
			}
		})
	}
}

// A drain waits for the proposals made before it, not for writes that
// register after it began (their checks find the lease ended), so a
// stream of new puts with the lease cannot hold a revoke forever.
func TestLeaseWrites_DrainWaitsOnlyForEarlierProposals(t *testing.T) {
	var w leaseWrites
	first := w.begin(7)
	settle, ok := first.propose()
	if !ok {
		t.Fatal("proposal refused")
	}
	done := make(chan error, 1)
	go func() { done <- w.drain(context.Background(), 7) }()
	harness.Eventually(t, "the drain waiting", 10*time.Second, func() bool { return w.waiting() == 1 })
	later := w.begin(7)
	defer later.release()
	if _, ok := later.propose(); !ok {
		t.Error("a write registered after the drain began was fenced")
	}
	select {
	case <-done:
		t.Fatal("the drain ended before the proposal it waits for settled")
	default:
	}
	settle()
	first.release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drain waited for a write registered after it began")
	}
	if pending, drains := w.pendingFor(7), w.waiting(); pending != 1 || drains != 0 {
		t.Errorf("%d pending, %d drains; want 1, 0", pending, drains)
	}
}
