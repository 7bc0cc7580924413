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
		{1 << 20, false},
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
		{"4 MiB/s", MinSnapshotRate, leastTime(len(data), MinSnapshotRate)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got, err := io.ReadAll(pacedReader{r: bytes.NewReader(data), lim: newPacer(tc.rate), stop: make(chan struct{})})
			if took := time.Since(start); took < tc.least {
				t.Errorf("read %d bytes in %v at %d bytes/s: want at least %v", len(data), took, tc.rate, tc.least)
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, err %v; want the %d bytes given", len(got), err, len(data))
			}
		})
	}
}

func TestPace_AWaitEndsWhenTheStoreCloses(t *testing.T) {
	stop := make(chan struct{})
	lim := newPacer(MinSnapshotRate)
	lim.SetLimit(paceBurst / 60) // the second burst is a minute away
	if err := pace(lim, paceBurst, stop); err != nil {
		t.Fatalf("first burst: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pace(lim, paceBurst, stop) }()
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
