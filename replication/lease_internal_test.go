package replication

import (
	"testing"
	"time"
)

// resync replaces what the lessor holds of a lease only while it still
// holds the record whose expiry was refused: a full TTL from now for the
// current record, or nothing when the lease has ended.
func TestLessor_ResyncAfterARefusedExpiry(t *testing.T) {
	seen := leaseRecord{ttl: 5, renew: 1}.encode()
	current := leaseRecord{ttl: 5, renew: 7}.encode()
	other := leaseRecord{ttl: 5, renew: 3}.encode()
	cases := []struct {
		name       string
		holds      []byte // what the lessor holds when resync comes
		current    []byte
		wantRecord []byte // nil: forgotten
	}{
		{"the record changed unseen", seen, current, current},
		{"the lease ended unseen", seen, nil, nil},
		{"observed meanwhile: left alone", other, current, other},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLessor()
			l.observe(leaseKey(9), c.holds, false, 0)
			l.mu.Lock()
			l.deadline[9] = time.Now().Add(-time.Second) // past: its expiry was tried
			l.mu.Unlock()
			before := time.Now()
			l.resync(9, seen, c.current)
			l.mu.Lock()
			defer l.mu.Unlock()
			got, ok := l.record[9]
			if c.wantRecord == nil {
				if ok {
					t.Fatalf("lessor still holds %x", got)
				}
				return
			}
			if string(got) != string(c.wantRecord) {
				t.Fatalf("lessor holds %x, want %x", got, c.wantRecord)
			}
			if string(c.wantRecord) == string(current) && l.deadline[9].Before(before.Add(5*time.Second)) {
				t.Fatalf("deadline %v, want a full TTL from the resync", l.deadline[9].Sub(before))
			}
		})
	}
}
