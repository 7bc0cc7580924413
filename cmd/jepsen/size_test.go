package main

import "testing"

func TestSizeFlag(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"65536", 65536, true},
		{"32KiB", 32 << 10, true},
		{"4 MiB", 4 << 20, true},
		{"1g", 1 << 30, true},
		{"", 0, false},
		{"-1", 0, false},
		{"12 parsecs", 0, false},
		{"9999999999GiB", 0, false},
	}
	for _, tc := range tests {
		var s sizeFlag
		err := s.Set(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int64(s) != tc.want) {
			t.Errorf("Set(%q) = %d, %v; want %d, ok=%v", tc.in, s, err, tc.want, tc.ok)
		}
	}
}
