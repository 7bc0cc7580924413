package rpctypes

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// WatchCursor is a watch's position (WatchRequest.from, WatchResponse.cursor,
// HTTP's SSE id): for each range the watch covers, the index up to which
// every event has been delivered. Its text is RANGE:INDEX entries joined by
// commas, "7:120,9:44", like a SessionToken's.
//
// Unlike a SessionToken it keeps entries at index 0: a range whose events
// are delivered from its very first (a range created by a split, which
// starts at 0) is part of the position, and dropping it would make a
// resumed watch skip that range.
type WatchCursor map[uint64]uint64

// maxCursorEntries bounds what a cursor from a client may name: one entry
// per range a watch spans.
const maxCursorEntries = 100000

// ParseWatchCursor parses a cursor's text; "" is the empty cursor (a watch
// from now). A range named twice is an error: a cursor is a position, and
// two positions for one range cannot both be right.
func ParseWatchCursor(s string) (WatchCursor, error) {
	c := WatchCursor{}
	if s == "" {
		return c, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		r, idx, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("watch cursor entry %q: want RANGE:INDEX[,RANGE:INDEX...]", part)
		}
		id, err1 := strconv.ParseUint(r, 10, 64)
		i, err2 := strconv.ParseUint(idx, 10, 64)
		if err1 != nil || err2 != nil || id == 0 {
			return nil, fmt.Errorf("watch cursor entry %q: want a range id and an index, unsigned decimal numbers, the id not 0", part)
		}
		if _, dup := c[id]; dup {
			return nil, fmt.Errorf("watch cursor names range %d twice", id)
		}
		if len(c) == maxCursorEntries {
			return nil, fmt.Errorf("watch cursor names more than %d ranges", maxCursorEntries)
		}
		c[id] = i
	}
	return c, nil
}

// String is the cursor's text, its ranges in increasing order.
func (c WatchCursor) String() string {
	ids := make([]uint64, 0, len(c))
	for id := range c {
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
		b.WriteString(strconv.FormatUint(c[id], 10))
	}
	return b.String()
}
