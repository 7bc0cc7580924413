package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
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

// The sink must sync the very file hashicorp/raft writes: if a new
// release of it moved the file, the syncs would silently stop.
func TestSyncedSnapshots_SyncTheFileFileSnapshotStoreWrites(t *testing.T) {
	for _, rate := range []int64{0, 64 << 20} {
		t.Run(fmt.Sprintf("rate %d", rate), func(t *testing.T) {
			dir := t.TempDir()
			fs, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			store := &syncedSnapshots{FileSnapshotStore: fs, dir: dir + "/snapshots", lim: newPacer(rate), stop: make(chan struct{})}
			sink, err := store.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := sink.(*syncedSink)
			if _, err := os.Stat(s.path); err != nil {
				t.Fatalf("the sink's file is not where syncedSink looks (%v): hashicorp/raft changed its layout", err)
			}
			data := bytes.Repeat([]byte{7, 1, 2}, (2*snapshotSyncBytes+12345)/3)
			if _, err := sink.Write(data); err != nil {
				t.Fatal(err)
			}
			if s.f == nil {
				t.Fatalf("wrote %d bytes and never synced the file", len(data))
			}
			// One Write of 2 MiB and more: a sync at each MiB, not one
			// for the whole Write.
			if want := len(data) / snapshotSyncBytes; s.syncs != want {
				t.Fatalf("one Write of %d bytes made %d syncs, want %d", len(data), s.syncs, want)
			}
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}
			if s.f != nil {
				t.Fatal("Close left the sync handle open")
			}
			_, rc, err := store.Open(sink.ID())
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("snapshot read back: %d bytes, err %v; want the %d written", len(got), err, len(data))
			}
		})
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

// The node's own snapshot holds a bbolt read transaction while Persist
// writes it: it must not wait for the rate.
func TestSyncedSink_PersistIsNotPaced(t *testing.T) {
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
	if list, err := st.Snapshots.List(); err != nil || len(list) != 1 {
		t.Fatalf("snapshots after Persist: %v, %v; want the one written", list, err)
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

	st, sink := rangeSink(t, s, 1, 5000)
	restored, copied := make(chan error, 1), make(chan error, 1)
	go func() { restored <- g.Restore(io.NopCloser(bytes.NewReader(stream))) }()
	go func() {
		// 32 KiB at a time, as hashicorp/raft receives one (a bare
		// Reader: bytes.Reader's WriteTo would make it one Write).
		_, err := io.Copy(sink, struct{ io.Reader }{bytes.NewReader(stream)})
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
