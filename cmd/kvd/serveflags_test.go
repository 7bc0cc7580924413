package main

import "testing"

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
