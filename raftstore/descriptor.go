package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Descriptor describes a range: the keys it holds, [Start, End) in bytewise
// order with an empty End meaning "to the end of the key space", and the
// nodes that replicate it. Generation increases with every split or merge so
// that a stale copy can be told from a fresh one.
//
// The descriptor is part of the range's replicated state: it is stored in
// state.db in the same transaction as the data it describes (a split
// changes both at once) and travels in snapshots.
type Descriptor struct {
	ID         uint64   `json:"id"`
	Start      []byte   `json:"start"`
	End        []byte   `json:"end"`
	Generation uint64   `json:"generation"`
	Replicas   []string `json:"replicas"`
}

// MetaRangeID is the range that holds the cluster's metadata (range
// descriptors, node addresses) instead of user keys.
const MetaRangeID = 1

// IsMeta reports whether d is the meta range.
func (d *Descriptor) IsMeta() bool { return d.ID == MetaRangeID }

// Clone returns a deep copy.
func (d Descriptor) Clone() Descriptor {
	d.Start, d.End = bytes.Clone(d.Start), bytes.Clone(d.End)
	d.Replicas = slices.Clone(d.Replicas)
	return d
}

// Marshal encodes the descriptor for storage.
func (d *Descriptor) Marshal() []byte {
	b, _ := json.Marshal(d) // cannot fail: plain fields
	return b
}

// UnmarshalDescriptor decodes a stored descriptor.
func UnmarshalDescriptor(b []byte) (Descriptor, error) {
	var d Descriptor
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("raftstore: bad descriptor: %w", err)
	}
	return d, nil
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
