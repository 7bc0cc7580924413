package main

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeFlag is a byte count given as a whole number with an optional unit
// (KiB, MiB, GiB, powers of 1024), as `make bench-rebalance` takes
// RANGE_MAX_BYTES, so that one value works for both targets.
type sizeFlag int64

func (s *sizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeFlag) Set(v string) error {
	t := strings.TrimSpace(v)
	num, unit := t, ""
	if i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a whole number of bytes with an optional unit (KiB, MiB, GiB)", v)
	}
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20, "g": 30, "gb": 30, "gib": 30}
	sh, ok := shift[unit]
	if !ok {
		return fmt.Errorf("%q: unknown unit %q (want B, KiB, MiB or GiB)", v, unit)
	}
	if n > (1<<62)>>sh {
		return fmt.Errorf("%q is too large", v)
	}
	*s = sizeFlag(n << sh)
	return nil
}
