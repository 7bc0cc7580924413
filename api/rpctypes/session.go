package rpctypes

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// SessionToken is a session token (ReadOptions.session_token, a header's
// session_token, HTTP's X-Dialkv-Session): for each range, the highest log
// index a client has seen. Its text is RANGE:INDEX entries joined by
// commas, "2:1042" or, across ranges, "2:1042,7:88".
//
// This is the token's format, shared by servers and clients. What a
// server accepts of a token from a client (how many entries, which
// ranges) is the server's to check (package replication).
type SessionToken map[uint64]uint64

// ParseSessionToken parses a token's text; "" is the empty token. A range
// named twice keeps its highest index, and an entry at index 0, which asks
// for nothing, is dropped.
func ParseSessionToken(s string) (SessionToken, error) {
	t := SessionToken{}
	if s == "" {
		return t, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		r, idx, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("session token entry %q: want RANGE:INDEX[,RANGE:INDEX...]", part)
		}
		id, err1 := strconv.ParseUint(r, 10, 64)
		i, err2 := strconv.ParseUint(idx, 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("session token entry %q: want two unsigned decimal numbers", part)
		}
		if i > t[id] {
			t[id] = i
		}
	}
	return t, nil
}

// String is the token's text, its ranges in increasing order.
func (t SessionToken) String() string {
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

// Merge returns, for each range, the higher index of t and o: a session
// that has seen both has seen each. t and o are not changed.
func (t SessionToken) Merge(o SessionToken) SessionToken {
	out := make(SessionToken, max(len(t), len(o)))
	for _, from := range []SessionToken{t, o} {
		for id, idx := range from {
			out[id] = max(out[id], idx)
		}
	}
	return out
}

// With returns t advanced to index on range id (never moved back): the
// token of an answer that range served at index.
func (t SessionToken) With(id, index uint64) SessionToken {
	out := make(SessionToken, len(t)+1)
	for k, v := range t {
		out[k] = v
	}
	out[id] = max(out[id], index)
	return out
}

// MergeSessionTokens merges two tokens' texts, as a client does to carry
// its session from one answer to the next.
func MergeSessionTokens(a, b string) (string, error) {
	ta, err := ParseSessionToken(a)
	if err != nil {
		return "", err
	}
	tb, err := ParseSessionToken(b)
	if err != nil {
		return "", err
	}
	return ta.Merge(tb).String(), nil
}
