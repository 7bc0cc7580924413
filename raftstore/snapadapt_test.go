package raftstore

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestPaceControl_Next(t *testing.T) {
	const mib = 1 << 20
	us := time.Microsecond
	// tick is one call of next: syncs (count) taking took each, with
	// paced bytes moved over 100 ms.
	type tick struct {
		syncs int
		took  time.Duration
		paced int64
		want  float64
	}
	for _, tc := range []struct {
		name    string
		ceiling int64
		ticks   []tick
	}{
		{"starts at the ceiling, no bound given", 0, []tick{
			{10, 200 * us, 0, adaptCeiling},
		}},
		{"starts at the bound given", 64 * mib, []tick{
			{10, 200 * us, 0, 64 * mib},
		}},
		{"halves what flowed when syncs take twice as long", 0, []tick{
			{10, 200 * us, 0, adaptCeiling},
			{10, 900 * us, 10 * mib, 50 * mib}, // 100 MiB/s flowed
			{10, 900 * us, 5 * mib, 25 * mib},
			{10, 900 * us, 1 * mib, MinSnapshotRate}, // never below the floor
		}},
		{"adds a step while syncs keep their time", 0, []tick{
			{10, 200 * us, 0, adaptCeiling},
			{10, 900 * us, 10 * mib, 50 * mib},
			{10, 300 * us, 5 * mib, 50*mib + adaptStep}, // 1.5x: not congested
			{0, 0, 5 * mib, 50*mib + 2*adaptStep},       // no sync to judge by
		}},
		{"a rise within the slack is not congestion", 0, []tick{
			{10, 60 * us, 0, adaptCeiling},
			{10, 200 * us, 10 * mib, adaptCeiling}, // 3.3x, but 140 µs more
		}},
		{"a slower tick raises the resting time only at rest", 0, []tick{
			{10, 200 * us, 0, adaptCeiling},
			{10, 2000 * us, 10 * mib, 50 * mib},
			{10, 2000 * us, 10 * mib, 25 * mib}, // still judged against 200 µs
		}},
		{"a faster tick lowers the resting time while moves flow", 0, []tick{
			{10, 2000 * us, 10 * mib, adaptCeiling}, // a joining node's first syncs
			{10, 300 * us, 10 * mib, adaptCeiling},
			{10, 2000 * us, 10 * mib, 50 * mib},
		}},
		{"returns to the ceiling by steps once moves stop", 64 * mib, []tick{
			{10, 200 * us, 0, 64 * mib},
			{10, 900 * us, 2 * mib, MinSnapshotRate},
			{10, 200 * us, 0, MinSnapshotRate + adaptStep},
			{10, 200 * us, 0, MinSnapshotRate + 2*adaptStep},
			{10, 200 * us, 0, 64 * mib},
			{10, 200 * us, 0, 64 * mib},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPaceControl(tc.ceiling)
			var syncs uint64
			var total time.Duration
			for i, tk := range tc.ticks {
				syncs += uint64(tk.syncs)
				total += time.Duration(tk.syncs) * tk.took
				if got := c.next(syncs, total, tk.paced, adaptTick); got != tk.want {
					t.Fatalf("tick %d (%d syncs of %v, %d bytes paced): pace %.0f, want %.0f", i, tk.syncs, tk.took, tk.paced, got, tk.want)
				}
			}
		})
	}
}

// The store's loop reads the WAL's sync times: slow syncs while snapshot
// bytes flow bring the pace down to the floor, and it climbs back once
// they stop.
func TestStore_AdaptivePaceFollowsTheWALSyncTime(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), func(c *Config) { c.SnapshotRateAdaptive = true })
	defer s.Close()
	if got := s.SnapshotPace(); got != adaptCeiling {
		t.Fatalf("pace at start %d, want %d", got, adaptCeiling)
	}
	st, err := s.OpenRaftStorage(1, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var slow atomic.Bool
	s.wal.SetSyncFunc(func(sync func() error) error {
		if slow.Load() {
			// Far above any resting sync, even on a loaded machine.
			time.Sleep(20 * time.Millisecond)
		}
		return sync()
	})
	// A writer makes the syncs the loop judges by; flowing says whether
	// snapshot bytes move meanwhile, as a paced restore would charge them.
	var flowing atomic.Bool
	stop, done := make(chan struct{}), make(chan error, 1)
	go func() {
		for i := uint64(1); i < 1e6; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := st.Log().StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: []byte("x")}}); err != nil {
				done <- err
				return
			}
			if flowing.Load() {
				s.snapFlow.Add(256 << 10)
			}
			time.Sleep(time.Millisecond) // a foreground write's pace
		}
		done <- nil
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	}()
	// until polls: the loop sets the pace every adaptTick, and no event
	// marks a tick.
	until := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: pace %d after 10 s", what, s.SnapshotPace())
			}
			time.Sleep(adaptTick / 4)
		}
	}
	until("the resting sync time learned", func() bool { return s.snapBase.Load() > 0 })
	flowing.Store(true)
	slow.Store(true)
	until("slow syncs while snapshots flow", func() bool { return s.SnapshotPace() == MinSnapshotRate })
	// The moves end: the pace climbs back whatever the syncs take (on a
	// loaded machine they may stay above twice the fastest tick).
	slow.Store(false)
	flowing.Store(false)
	until("moves over", func() bool { return s.SnapshotPace() >= MinSnapshotRate+2*adaptStep })
}
