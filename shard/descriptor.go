package shard

import (
	"bytes"
	"fmt"
)

// Descriptor describes a range: the keys it holds, [Start, End) in bytewise
// order with an empty End meaning "to the end of the key space", and the
// nodes that replicate it. Generation increases with every split or merge so
// that a stale copy can be told from a fresh one.
type Descriptor struct {
	ID         uint64
	Start      []byte
	End        []byte
	Generation uint64
	Replicas   []string
}

// Contains reports whether key belongs to the range.
func (d *Descriptor) Contains(key []byte) bool {
	return bytes.Compare(key, d.Start) >= 0 && (len(d.End) == 0 || bytes.Compare(key, d.End) < 0)
}

// Clamp intersects [start, end) with the range. An empty end means
// unbounded on both sides of the call.
func (d *Descriptor) Clamp(start, end []byte) (s, e []byte) {
	s, e = start, end
	if bytes.Compare(s, d.Start) < 0 {
		s = d.Start
	}
	if len(d.End) > 0 && (len(e) == 0 || bytes.Compare(e, d.End) > 0) {
		e = d.End
	}
	return s, e
}

func (d *Descriptor) String() string {
	end := "∞"
	if len(d.End) > 0 {
		end = fmt.Sprintf("%q", d.End)
	}
	return fmt.Sprintf("r%d[%q, %s) gen %d", d.ID, d.Start, end, d.Generation)
}
