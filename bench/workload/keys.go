package workload

import (
	"math"
	"math/rand/v2"
	"strconv"
)

// keyChooser picks key indexes in [0, n). It is read-only after creation,
// so client goroutines share it, each with its own *rand.Rand.
type keyChooser interface {
	next(r *rand.Rand) int
}

type uniform struct{ n int }

func (u uniform) next(r *rand.Rand) int { return r.IntN(u.n) }

// zipfian is the generator of Gray et al., "Quickly Generating
// Billion-Record Synthetic Databases" (SIGMOD 1994), as YCSB uses it: rank
// k (0-based) is drawn with probability proportional to 1/(k+1)^theta, for
// 0 < theta < 1. Ranks are then scrambled by a hash so that the hot keys
// are spread over the key space instead of sitting at its start, which
// would put them all in one range of a range-partitioned store.
type zipfian struct {
	n                   int
	theta, alpha, zetan float64
	eta, half           float64
}

func newZipfian(n int, theta float64) *zipfian {
	z := &zipfian{n: n, theta: theta, alpha: 1 / (1 - theta)}
	z.zetan = zeta(n, theta)
	zeta2 := zeta(2, theta)
	z.eta = (1 - math.Pow(2/float64(n), 1-theta)) / (1 - zeta2/z.zetan)
	z.half = 1 + math.Pow(0.5, theta)
	return z
}

// zeta is sum over i in [1, n] of 1/i^theta: O(n), computed once per run
// (about 20 ms for a million keys).
func zeta(n int, theta float64) float64 {
	var s float64
	for i := 1; i <= n; i++ {
		s += 1 / math.Pow(float64(i), theta)
	}
	return s
}

// rank draws a 0-based popularity rank.
func (z *zipfian) rank(r *rand.Rand) int {
	u := r.Float64()
	uz := u * z.zetan
	if uz < 1 {
		return 0
	}
	if uz < z.half {
		return min(1, z.n-1)
	}
	k := int(float64(z.n) * math.Pow(z.eta*u-z.eta+1, z.alpha))
	return min(max(k, 0), z.n-1)
}

func (z *zipfian) next(r *rand.Rand) int { return int(fnv64(uint64(z.rank(r))) % uint64(z.n)) }

// fnv64 is FNV-1a over the 8 bytes of v.
func fnv64(v uint64) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= prime
		v >>= 8
	}
	return h
}

func newKeyChooser(cfg Config) keyChooser {
	if cfg.Zipf == 0 {
		return uniform{n: cfg.Keys}
	}
	return newZipfian(cfg.Keys, cfg.Zipf)
}

// keyWidth is the number of digits of a key index: enough for any int.
const keyWidth = 10

// AppendKey appends the key of index i (prefix plus zero-padded decimal)
// to dst. Keys sort in index order.
func AppendKey(dst []byte, prefix string, i int) []byte {
	dst = append(dst, prefix...)
	var digits [20]byte
	s := strconv.AppendInt(digits[:0], int64(i), 10)
	for pad := keyWidth - len(s); pad > 0; pad-- {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}
