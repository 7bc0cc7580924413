package wal

import (
	"testing"
	"time"
)

// Group-commit sync times land in the bucket whose bound is the first at
// or above them, so that a histogram built from Stats puts 100 ms (where
// the fsync alert draws the line) on the right side.
func TestWAL_SyncHistogramBuckets(t *testing.T) {
	bounds := SyncBuckets()
	last := len(bounds)
	tests := []struct {
		took   time.Duration
		bucket int
	}{
		{0, 0},
		{100 * time.Microsecond, 0},
		{101 * time.Microsecond, 1},
		{100 * time.Millisecond, 9},
		{100*time.Millisecond + 1, 10},
		{10 * time.Second, last - 1},
		{time.Minute, last},
	}
	if bounds[9] != 100*time.Millisecond {
		t.Fatalf("bucket 9's bound is %v, want 100ms", bounds[9])
	}
	w := testOpenDir(t, t.TempDir(), Options{})
	var total time.Duration
	for _, tt := range tests {
		before := w.Stats()
		w.observeSync(tt.took)
		after := w.Stats()
		total += tt.took
		for i := range after.SyncHistogram {
			want := before.SyncHistogram[i]
			if i == tt.bucket {
				want++
			}
			if after.SyncHistogram[i] != want {
				t.Errorf("sync of %v: bucket %d holds %d, want %d", tt.took, i, after.SyncHistogram[i], want)
			}
		}
		if after.LastSync != tt.took {
			t.Errorf("sync of %v: LastSync %v", tt.took, after.LastSync)
		}
	}
	if got := w.Stats().SyncTime; got < total {
		t.Errorf("SyncTime %v, want at least the %v observed", got, total)
	}
}
