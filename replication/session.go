package replication

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A session token records, per range, the highest log index a client has
// seen: "1:1042" or, across ranges, "1:1042,7:88". A session read on range r
// may be served by any replica of r that has applied at least token[r].
type sessionToken map[uint64]uint64

func parseSessionToken(s string) (sessionToken, error) {
	t := sessionToken{}
	if s == "" {
		return t, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		r, idx, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("%w: %q (want RANGE:INDEX[,RANGE:INDEX...])", ErrBadSessionToken, part)
		}
		rid, err1 := strconv.ParseUint(r, 10, 64)
		i, err2 := strconv.ParseUint(idx, 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: %q", ErrBadSessionToken, part)
		}
		t[rid] = max(t[rid], i)
	}
	return t, nil
}

// with returns the token advanced to index on range id.
func (t sessionToken) with(id, index uint64) sessionToken {
	out := make(sessionToken, len(t)+1)
	for k, v := range t {
		out[k] = v
	}
	out[id] = max(out[id], index)
	return out
}

func (t sessionToken) String() string {
	if len(t) == 1 { // the common case: no sorting, one allocation
		for id, idx := range t {
			return strconv.FormatUint(id, 10) + ":" + strconv.FormatUint(idx, 10)
		}
	}
	ids := make([]uint64, 0, len(t))
	for id := range t {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(id, 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(t[id], 10))
	}
	return b.String()
}
