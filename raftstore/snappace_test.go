package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestConfig_ValidateSnapshotRate(t *testing.T) {
	for _, tc := range []struct {
		rate int64
		ok   bool
	}{
		{0, true},
		{MinSnapshotRate, true},
		{1 << 30, true},
		{-1, false},
		{4 << 20, false},
		{MinSnapshotRate - 1, false},
	} {
		cfg := DefaultConfig(t.TempDir())
		cfg.SnapshotRate = tc.rate
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("SnapshotRate %d: Validate() = %v, want ok %v", tc.rate, err, tc.ok)
		}
	}
}

// leastTime is how long moving n bytes at rate must take: the first
// burst is free, the rest comes at the rate.
func leastTime(n int, rate int64) time.Duration {
	return time.Duration(float64(n-paceBurst) / float64(rate) * float64(time.Second))
}

func TestPacedReader_YieldsTheDataNoFasterThanTheRate(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/4/16) // 1.25 MiB
	for _, tc := range []struct {
		name  string
		rate  int64
		least time.Duration
	}{
		{"no bound", 0, 0},
		{"16 MiB/s", MinSnapshotRate, leastTime(len(data), MinSnapshotRate)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got, err := io.ReadAll(pacedReader{r: bytes.NewReader(data), m: &meter{lim: newPacer(tc.rate), stop: make(chan struct{})}})
			if took := time.Since(start); took < tc.least {
				t.Errorf("read %d bytes in %v at %d bytes/s: want at least %v", len(data), took, tc.rate, tc.least)
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, err %v; want the %d bytes given", len(got), err, len(data))
			}
		})
	}
}

func TestTakeBurst_AWaitEndsWhenTheStoreCloses(t *testing.T) {
	stop := make(chan struct{})
	lim := newPacer(MinSnapshotRate)
	lim.SetLimit(paceBurst / 60) // the second burst is a minute away
	if err := takeBurst(lim, stop); err != nil {
		t.Fatalf("first burst: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- takeBurst(lim, stop) }()
	close(stop)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pace after close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a paced write kept waiting after the store closed")
	}
}

func TestRangeFSM_PacedRestoreRestoresAll(t *testing.T) {
	stream := snapshotOf(t, 1, 5000) // about 560 KiB: a free burst, then paced
	dst := openStoreWith(t, t.TempDir(), func(c *Config) { c.SnapshotRate = MinSnapshotRate; smallChunks(c) })
	defer dst.Close()
	g := mustRange(t, dst, 1)
	start := time.Now()
	if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if least := leastTime(len(stream), MinSnapshotRate); time.Since(start) < least {
		t.Errorf("restored %d bytes in %v: want at least %v at %d bytes/s", len(stream), time.Since(start), least, MinSnapshotRate)
	}
	if g.AppliedIndex() != 5000 {
		t.Fatalf("applied %d, want 5000", g.AppliedIndex())
	}
	for _, i := range []int{0, 2500, 4999} {
		mustGet(t, g, fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i))
	}
}

// Streams that write in small pieces must get the same turns as those
// that write in large ones: the meter charges the limiter by the burst.
func TestMeter_ChargesTheLimiterByTheBurst(t *testing.T) {
	lim := newPacer(MinSnapshotRate)
	lim.SetLimit(1) // no refill worth counting during the test
	m := &meter{lim: lim, stop: make(chan struct{})}
	for range paceBurst/(32<<10) - 1 {
		if err := m.charge(32 << 10); err != nil {
			t.Fatal(err)
		}
	}
	if tokens := lim.Tokens(); tokens < paceBurst-1 {
		t.Fatalf("after %d bytes, less than a burst, the limiter has %.0f tokens, want the full burst %d", paceBurst-32<<10, tokens, paceBurst)
	}
	if err := m.charge(32 << 10); err != nil {
		t.Fatal(err)
	}
	if tokens := lim.Tokens(); tokens > 1 {
		t.Fatalf("after a whole burst the limiter still has %.0f tokens, want none", tokens)
	}
}

// rangeSink opens range id's Raft storage in s, as a shard does, and a
// snapshot sink on it at index.
func rangeSink(t *testing.T, s *Store, id, index uint64) (*RaftStorage, raft.SnapshotSink) {
	t.Helper()
	st, err := s.OpenRaftStorage(id, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	sink, err := st.Snapshots.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, sink
}

// The node's own snapshot is a reference: it must not wait for the
// rate, nor copy the range.
func TestRefSink_PersistIsNotPaced(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), func(c *Config) { c.SnapshotRate = MinSnapshotRate })
	defer s.Close()
	s.snapPace.SetLimit(paceBurst / 60) // a paced burst would wait a minute
	f := mustRange(t, s, 1)
	var logs []*raft.Log
	for i := range 3000 { // about 330 KiB: more than a burst
		logs = append(logs, put(uint64(i+1), fmt.Sprintf("k%04d", i), fmt.Sprintf("%0100d", i)))
	}
	f.ApplyBatch(logs)
	st, sink := rangeSink(t, s, 1, 3000)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	done := make(chan error, 1)
	go func() { done <- snap.Persist(sink) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		s.StopSnapshots()
		t.Fatal("Persist waited for the snapshot rate")
	}
	list, err := st.Snapshots.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("snapshots after Persist: %v, %v; want the one written", list, err)
	}
	if list[0].Size > 32 {
		t.Fatalf("the snapshot file holds %d bytes: want a reference, not the range", list[0].Size)
	}
}

// A node shutting down must not wait for paced snapshot work: its Raft
// groups' shutdown waits for it.
func TestStore_StopSnapshotsEndsPacedWork(t *testing.T) {
	stream := snapshotOf(t, 1, 5000) // about 560 KiB: more than a burst
	s := openStoreWith(t, t.TempDir(), func(c *Config) { c.SnapshotRate = MinSnapshotRate })
	defer s.Close()
	s.snapPace.SetLimit(paceBurst / 60)
	g := mustRange(t, s, 1)
	g.ApplyBatch([]*raft.Log{put(1, "old", "kept")})

	// Range 2 receives while range 1 restores a file of an older build.
	mustRange(t, s, 2)
	received := snapshotOf(t, 2, 5000)
	st, sink := rangeSink(t, s, 2, 5000)
	restored, copied := make(chan error, 1), make(chan error, 1)
	go func() { restored <- g.Restore(io.NopCloser(bytes.NewReader(stream))) }()
	go func() {
		// 32 KiB at a time, as hashicorp/raft receives one (a bare
		// Reader: bytes.Reader's WriteTo would make it one Write).
		_, err := io.Copy(sink, struct{ io.Reader }{bytes.NewReader(received)})
		if cerr := sink.Close(); err == nil {
			err = fmt.Errorf("the copy ended without an error, and Close said %v", cerr)
		} else if cerr == nil {
			err = errors.New("Close after a failed write finished the snapshot")
		}
		copied <- err
	}()
	s.StopSnapshots()
	for name, ch := range map[string]chan error{"restore": restored, "received copy": copied} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s: finished despite StopSnapshots", name)
			} else if name == "received copy" && !errors.Is(err, ErrClosed) {
				t.Errorf("%s: %v, want ErrClosed", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: still waiting for the rate after StopSnapshots", name)
		}
	}
	mustGet(t, g, "old", "kept")
	if list, err := st.Snapshots.List(); err != nil || len(list) != 0 {
		t.Fatalf("snapshots after a stopped copy: %v, %v; want none", list, err)
	}
}
