package wal

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// where is what the index must answer for one entry: the record that
// holds it and its position there.
type where struct {
	seg  *segment
	off  int64
	size int64
	k    uint64
}

// TestIndex_MatchesPerEntryModel runs random appends, cuts and rewrites
// against a map from index to record, the plain structure the packed
// index stands in for.
func TestIndex_MatchesPerEntryModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			segs := []*segment{{seq: 1}}
			var x index
			model := map[uint64]where{}
			var first, last uint64
			offs := map[*segment]int64{}
			place := func(n uint64) (*segment, int64, int64) {
				if rng.IntN(10) == 0 {
					segs = append(segs, &segment{seq: uint64(len(segs) + 1)})
				}
				seg := segs[len(segs)-1]
				size := int64(20 + rng.IntN(300)*int(n))
				off := offs[seg] + int64(rng.IntN(3000)) // other ranges' records between
				offs[seg] = off + size
				return seg, off, size
			}
			for step := 0; step < 3000; step++ {
				switch op := rng.IntN(20); {
				case op < 12: // append
					n := uint64(1 + rng.IntN(5))
					from := last + 1
					if last == 0 {
						from = uint64(1 + rng.IntN(100))
						first = from
					}
					seg, off, size := place(n)
					x.add(seg, block{first: from, n: n, off: off, size: size})
					for k := uint64(0); k < n; k++ {
						model[from+k] = where{seg, off, size, k}
					}
					last = from + n - 1
				case op < 14 && last > first: // suffix cut
					cut := first + 1 + uint64(rng.IntN(int(last-first)))
					x.truncFrom(cut)
					for i := cut; i <= last; i++ {
						delete(model, i)
					}
					last = cut - 1
				case op < 16 && last > first: // prefix cut
					upTo := first + uint64(rng.IntN(int(last-first)))
					x.truncTo(upTo)
					for i := first; i <= upTo; i++ {
						delete(model, i)
					}
					first = upTo + 1
				case op < 19 && last >= first && last > 0: // rewrite a span in one or two records
					lo := first + uint64(rng.IntN(int(last-first+1)))
					hi := lo + uint64(rng.IntN(int(last-lo+1)))
					seg, off, size := place(hi - lo + 1)
					blocks := []block{{first: lo, n: hi - lo + 1, off: off, size: size}}
					if hi > lo && rng.IntN(2) == 0 {
						mid := lo + (hi-lo)/2
						blocks = []block{{first: lo, n: mid - lo + 1, off: off, size: size / 2}, {first: mid + 1, n: hi - mid, off: off + size/2, size: size - size/2}}
					}
					x.replace(seg, blocks)
					for _, b := range blocks {
						for k := uint64(0); k < b.n; k++ {
							model[b.first+k] = where{seg, b.off, b.size, k}
						}
					}
				case op == 19 && rng.IntN(5) == 0: // clear
					x.clear()
					clear(model)
					first, last = 0, 0
				}
				checkIndex(t, &x, model, first, last)
			}
		})
	}
}

func checkIndex(t *testing.T, x *index, model map[uint64]where, first, last uint64) {
	t.Helper()
	if len(model) == 0 {
		first, last = 0, 0
	}
	if x.first() != first || x.last() != last || !x.contiguous() {
		t.Fatalf("index [%d, %d] (contiguous %v), want [%d, %d]", x.first(), x.last(), x.contiguous(), first, last)
	}
	for i := first; i <= last && last > 0; i++ {
		seg, b, ok := x.find(i)
		w := model[i]
		if !ok || seg != w.seg || b.off != w.off || b.size != w.size || i-b.first != w.k {
			t.Fatalf("entry %d: found %v seg %v block %+v, want %+v", i, ok, seg, b, w)
		}
	}
	if _, _, ok := x.find(last + 1); ok {
		t.Fatalf("entry %d after the last found", last+1)
	}
	if first > 0 {
		if _, _, ok := x.find(first - 1); ok {
			t.Fatalf("entry %d before the first found", first-1)
		}
	}
	// Each chunk accounts the records it refers to.
	for _, c := range x.chunks {
		var bytes int64
		c.each(func(b block) bool { bytes += b.size; return true })
		if bytes != c.bytes {
			t.Fatalf("chunk accounts %d bytes, its blocks %d", c.bytes, bytes)
		}
	}
}

func TestPlanCollection(t *testing.T) {
	const m = 1 << 20
	tests := []struct {
		name string
		segs []segStat
		want int
	}{
		{"nothing sealed", nil, 0},
		{"all live", []segStat{{m, m}, {m, m}}, 0},
		{"empty segments free at no cost", []segStat{{m, 0}, {m, 0}, {m, m}}, 2},
		{"a sleeping range's few records are copied", []segStat{{m, 10 << 10}, {m, 5 << 10}, {m, m}}, 2},
		{"half live is not worth copying", []segStat{{m, m / 2}}, 0},
		{"a full segment is not copied because an empty one precedes it", []segStat{{m, 0}, {m, m * 9 / 10}}, 1},
		{"mostly garbage spread over many", []segStat{{m, m / 4}, {m, m / 4}, {m, m / 4}, {m, m}}, 3},
		{"a live old segment behind garbage is worth it when the garbage is large", []segStat{{m, m * 3 / 4}, {m, 0}, {m, 0}, {m, 0}}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := planCollection(tc.segs); got != tc.want {
				t.Fatalf("planCollection = %d, want %d", got, tc.want)
			}
		})
	}
}
