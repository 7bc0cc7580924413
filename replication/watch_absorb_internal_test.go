package replication

import (
	"fmt"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
)

// absorb sends a batch whose events the watch all wants as it came (its
// slices, not copies); otherwise only the wanted events, each with its
// own encoding, and never a split's event.
func TestWatch_AbsorbSendsAWholeBatchWithoutCopying(t *testing.T) {
	ev := func(key string, idx uint64) *kvpb.Event {
		return &kvpb.Event{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte(key), RangeId: 7, Index: idx}
	}
	// A split into a range beyond the watch's span: nothing to follow.
	split := &kvpb.Event{RangeId: 7, Index: 4, ChildRange: 9, ChildStart: []byte("z")}
	tests := []struct {
		name     string
		events   []*kvpb.Event
		wantKeys []string
		same     bool // the message's slices are the batch's
	}{
		{"all wanted", []*kvpb.Event{ev("b/1", 1), ev("b/2", 2), ev("b/3", 3)}, []string{"b/1", "b/2", "b/3"}, true},
		{"one outside the span", []*kvpb.Event{ev("b/1", 1), ev("c/1", 2), ev("b/3", 3)}, []string{"b/1", "b/3"}, false},
		{"a split's event", []*kvpb.Event{ev("b/1", 1), split, ev("b/5", 5)}, []string{"b/1", "b/5"}, false},
		{"nothing wanted", []*kvpb.Event{ev("a/1", 1)}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &watch{start: []byte("b/"), end: []byte("b0"), cursor: map[uint64]uint64{7: 0}, states: map[uint64]*kvpb.WatchRangeState{}}
			m := feedMsg{rangeID: 7, events: tc.events, upTo: 5}
			for _, e := range tc.events {
				m.wire = append(m.wire, []byte(fmt.Sprintf("wire of %d", e.Index)))
			}
			msg, err := w.absorb(m)
			if err != nil {
				t.Fatal(err)
			}
			if w.cursor[7] != 5 {
				t.Errorf("cursor %d after the batch, want 5", w.cursor[7])
			}
			if len(tc.wantKeys) == 0 {
				if msg != nil {
					t.Fatalf("a message of %d events, want none", len(msg.Resp.Events))
				}
				return
			}
			got := msg.Resp.Events
			if len(got) != len(tc.wantKeys) || len(msg.Encoded) != len(got) {
				t.Fatalf("%d events and %d encodings, want %d", len(got), len(msg.Encoded), len(tc.wantKeys))
			}
			for i, e := range got {
				if string(e.Key) != tc.wantKeys[i] {
					t.Errorf("event %d is %q, want %q", i, e.Key, tc.wantKeys[i])
				}
				if want := fmt.Sprintf("wire of %d", e.Index); string(msg.Encoded[i]) != want {
					t.Errorf("event %d's encoding %q, want %q", i, msg.Encoded[i], want)
				}
			}
			if same := &got[0] == &tc.events[0] && &msg.Encoded[0] == &m.wire[0]; same != tc.same {
				t.Errorf("message shares the batch's slices: %v, want %v", same, tc.same)
			}
		})
	}
}
