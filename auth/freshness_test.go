package auth

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestFreshness(t *testing.T) {
	s := build(t, enabled(addUser("alice", nil), addRole("app"), grantRole("alice", "app"))...)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	bound := s.RevocationBound()
	if bound != DefaultRevocationBound {
		t.Fatalf("new state's bound %s, want %s", bound, DefaultRevocationBound)
	}

	var f Freshness
	if err := f.Check(s, t0); !errors.Is(err, ErrAuthStale) {
		t.Errorf("never confirmed: %v", err)
	}
	// The leader is ahead of the state held: not a confirmation.
	if err := f.Confirm(t0, s.Revision()+1, s); !errors.Is(err, ErrAuthStale) {
		t.Errorf("confirm behind the leader: %v", err)
	}
	if _, _, ok := f.ConfirmedAt(); ok {
		t.Error("a refused confirmation was recorded")
	}

	if err := f.Confirm(t0, s.Revision(), s); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		now  time.Time
		want error
	}{
		{t0, nil},
		{t0.Add(bound), nil},
		{t0.Add(bound + time.Nanosecond), ErrAuthStale},
		{t0.Add(time.Hour), ErrAuthStale},
	}
	for _, tt := range tests {
		if err := f.Check(s, tt.now); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("at +%s: %v, want %v", tt.now.Sub(t0), err, tt.want)
		}
	}

	// An answer to an older question, arriving late, proves nothing new.
	if err := f.Confirm(t0.Add(-time.Second), s.Revision(), s); err != nil {
		t.Fatal(err)
	}
	if at, _, _ := f.ConfirmedAt(); !at.Equal(t0) {
		t.Errorf("confirmation went back to %v", at)
	}
	// A newer one extends the window.
	if err := f.Confirm(t0.Add(bound), s.Revision(), s); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(s, t0.Add(2*bound)); err != nil {
		t.Errorf("after a newer confirmation: %v", err)
	}

	// The bound a revocation reports is the bound Check enforces: a node
	// still holding the old state refuses once it is past.
	newer, r, err := s.RevokeRole("alice", "app")
	if err != nil {
		t.Fatal(err)
	}
	if r.Bound != bound {
		t.Errorf("revocation reports %s, Check enforces %s", r.Bound, bound)
	}
	if err := f.Check(s, t0.Add(bound+r.Bound+time.Nanosecond)); !errors.Is(err, ErrAuthStale) {
		t.Errorf("lagging node past the bound: %v", err)
	}
	// Once confirmed against the new revision, the old state is refused.
	if err := f.Confirm(t0.Add(3*bound), newer.Revision(), newer); err != nil {
		t.Fatal(err)
	}
	if err := f.Check(s, t0.Add(3*bound)); !errors.Is(err, ErrAuthStale) {
		t.Errorf("state older than the confirmed revision: %v", err)
	}
	if err := f.Check(newer, t0.Add(3*bound)); err != nil {
		t.Errorf("current state: %v", err)
	}
}

// Confirmations race with checks on a serving node; the newest sent time
// must win whatever the interleaving.
func TestFreshnessConcurrent(t *testing.T) {
	s := build(t)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var f Freshness
	var wg sync.WaitGroup
	const workers, each = 4, 100
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				sent := t0.Add(time.Duration(i*workers+w) * time.Millisecond)
				if err := f.Confirm(sent, s.Revision(), s); err != nil {
					t.Error(err)
					return
				}
				_ = f.Check(s, sent)
			}
		})
	}
	wg.Wait()
	at, _, ok := f.ConfirmedAt()
	if want := t0.Add((workers*each - 1) * time.Millisecond); !ok || !at.Equal(want) {
		t.Errorf("confirmed at %v, want %v", at, want)
	}
}
