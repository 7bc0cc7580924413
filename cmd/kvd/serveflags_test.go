package main

import (
	"testing"
	"time"
)

func TestCheckSnapshotRate(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		rate, rangeMax int64
		ok             bool
	}{
		{0, 64 * mib, true},
		{16 * mib, 64 * mib, true},
		{64 * mib, 64 * mib, true},
		{16*mib - 1, 64 * mib, false},
		{-1, 64 * mib, false},
		{16 * mib, 512 * mib, false}, // a 512 MiB range needs 64 MiB/s
		{64 * mib, 512 * mib, true},
	} {
		if err := checkSnapshotRate(tc.rate, tc.rangeMax); (err == nil) != tc.ok {
			t.Errorf("checkSnapshotRate(%d, %d) = %v, want ok %v", tc.rate, tc.rangeMax, err, tc.ok)
		}
	}
}

func TestDefaultSnapshotRate_FollowsLargerRangesUp(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct{ rangeMax, want int64 }{
		{64 * mib, 96 * mib},
		{768 * mib, 96 * mib},
		{1024 * mib, 128 * mib},
	} {
		got := defaultSnapshotRate(tc.rangeMax)
		if got != tc.want {
			t.Errorf("defaultSnapshotRate(%d) = %d, want %d", tc.rangeMax, got, tc.want)
		}
		if err := checkSnapshotRate(got, tc.rangeMax); err != nil {
			t.Errorf("the default for --range-max-bytes %d is refused: %v", tc.rangeMax, err)
		}
	}
}

func TestCheckStateCommit(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{
		{time.Millisecond, true},
		{500 * time.Millisecond, true},
		{10 * time.Second, true},
		{0, false},
		{-time.Second, false},
		{10*time.Second + 1, false},
	} {
		if err := checkStateCommit(tc.d); (err == nil) != tc.ok {
			t.Errorf("checkStateCommit(%v) = %v, want ok %v", tc.d, err, tc.ok)
		}
	}
}
