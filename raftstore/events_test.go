package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// The feed is a user range's: range 1 is the meta range, which keeps none.
const feedRange = 2

// openStoreWith is openStore with the configuration adjusted by mod.
func openStoreWith(t testing.TB, dir string, mod func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.CommitInterval = time.Hour
	cfg.Logger = testLogger(t)
	mod(&cfg)
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func leasePut(index uint64, k, v string, lease uint64) *raft.Log {
	return cmdLog(index, Command{Op: OpPutLease, Key: []byte(k), Value: []byte(v), Lease: lease})
}

func revoke(index, lease uint64, cause DeleteCause) *raft.Log {
	return cmdLog(index, Command{Op: OpLeaseRevoke, Lease: lease, Cause: cause})
}

func cas(index uint64, k, expected, v string) *raft.Log {
	return cmdLog(index, Command{Op: OpCompareAndSwap, Key: []byte(k), Expected: []byte(expected), Value: []byte(v)})
}

func casMissing(index uint64, k, v string) *raft.Log {
	return cmdLog(index, Command{Op: OpCompareAndSwap, Key: []byte(k), ExpectMissing: true, Value: []byte(v)})
}

// evString renders an event without its clock, for comparing feeds.
func evString(e Event) string {
	var s string
	switch e.Type {
	case EventPut:
		s = fmt.Sprintf("%d put %s=%s", e.Index, e.Key, e.Value)
	case EventDelete:
		s = fmt.Sprintf("%d del %s", e.Index, e.Key)
	case EventSplit:
		if e.Child == nil {
			s = fmt.Sprintf("%d split without a child", e.Index)
		} else {
			s = fmt.Sprintf("%d split %s", e.Index, e.Child)
		}
	default:
		s = fmt.Sprintf("%d type %d", e.Index, e.Type)
	}
	switch {
	case e.PrevExists:
		s += " prev=" + string(e.PrevValue)
	case len(e.PrevValue) > 0:
		s += " prev without PrevExists"
	}
	if e.Lease != 0 {
		s += fmt.Sprintf(" lease=%d", e.Lease)
	}
	if e.Cause != CauseNone {
		s += fmt.Sprintf(" cause=%d", e.Cause)
	}
	return s
}

func evStrings(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = evString(e)
	}
	return out
}

// allEvents reads every event after after in one page and checks that
// upTo is then the applied index.
func allEvents(t *testing.T, f *RangeFSM, after uint64) []Event {
	t.Helper()
	evs, upTo, err := f.Events(after, 1<<20, 1<<30, true)
	if err != nil {
		t.Fatalf("events after %d: %v", after, err)
	}
	if upTo != f.AppliedIndex() {
		t.Fatalf("events after %d: upTo %d, want the applied index %d", after, upTo, f.AppliedIndex())
	}
	return evs
}

func checkEvents(t *testing.T, what string, got []Event, want []string) {
	t.Helper()
	if g := evStrings(got); !slices.Equal(g, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, g, want)
	}
}

func mustFlush(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// feedLogs change keys in every way the feed records, and in ways it must
// not (a delete of a missing key, failed compare-and-swaps).
var feedLogs = []*raft.Log{
	put(1, "a", "1"),
	put(2, "b", "1"),
	put(3, "a", "2"),
	del(4, "b"),
	del(5, "missing"),
	cas(6, "a", "2", "3"),
	cas(7, "a", "9", "never"),
	casMissing(8, "c", "x"),
	casMissing(9, "c", "never"),
	put(10, "c", "y"),
}

var feedEvents = []string{
	"1 put a=1",
	"2 put b=1",
	"3 put a=2 prev=1",
	"4 del b prev=1",
	"6 put a=3 prev=2",
	"8 put c=x",
	"10 put c=y prev=x",
}

// TestRangeFSM_PrevResolvedAcrossACommit: a put that finds its key in no
// overlay leaves its event's previous value to bbolt. It resolves to the
// value before the write when a watcher reads it from the overlay, when
// its layer commits, and also when that commit lands between the read of
// the overlay and the resolution (the commit drops the layer only after
// its transaction, so bbolt then holds the write itself).
func TestRangeFSM_PrevResolvedAcrossACommit(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1")})
	mustFlush(t, s)
	f.ApplyBatch([]*raft.Log{put(2, "a", "2"), put(3, "a", "3")})
	f.mu.RLock()
	raw := []Event{*f.pending.events[0], *f.pending.events[1]}
	f.mu.RUnlock()
	if !raw[0].prevOnDisk || raw[1].prevOnDisk {
		t.Fatalf("prevOnDisk %v, %v: want the first write's left to bbolt, the second's from the overlay", raw[0].prevOnDisk, raw[1].prevOnDisk)
	}
	want := []string{"2 put a=2 prev=1", "3 put a=3 prev=2"}
	checkEvents(t, "from the overlay", allEvents(t, f, 1), want)
	mustFlush(t, s)
	f.mu.RLock()
	pr := prevResolver{f: f}
	var err error
	for i := range raw {
		if err = pr.resolve(&raw[i]); err != nil {
			break
		}
	}
	pr.close()
	f.mu.RUnlock()
	if err != nil {
		t.Fatalf("resolve after the commit: %v", err)
	}
	checkEvents(t, "resolved after the commit", raw, want)
	checkEvents(t, "from bbolt", allEvents(t, f, 1), want)

	// A reader still holding the replica after the range left the node
	// gets an error, never "no previous value".
	f.ApplyBatch([]*raft.Log{put(4, "a", "4")})
	if err := s.DropRange(f.id); err != nil {
		t.Fatal(err)
	}
	if evs, _, err := f.Events(3, 10, 1<<20, true); !errors.Is(err, ErrRangeDropped) {
		t.Fatalf("events of a dropped range: %q, %v; want ErrRangeDropped", evStrings(evs), err)
	}
}

// TestRangeFSM_EventsRecordChanges: one event per write that changed a
// key, in index order, with the key's previous value, wherever the state
// and the events live (overlay, bbolt, both) and across restarts.
func TestRangeFSM_EventsRecordChanges(t *testing.T) {
	tests := []struct {
		name string
		// flushAfter commits after these indexes.
		flushAfter []uint64
		// restart closes and reopens the store at the end; crashAt kills it
		// after applying that index and replays the rest from the log.
		restart bool
		crashAt uint64
	}{
		{name: "overlay"},
		{name: "bbolt", flushAfter: []uint64{10}},
		{name: "commit after every entry", flushAfter: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{name: "half in bbolt", flushAfter: []uint64{4}},
		{name: "restart", flushAfter: []uint64{4}, restart: true},
		{name: "crash and replay", flushAfter: []uint64{4}, crashAt: 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			f := mustRange(t, s, feedRange)
			before := time.Now().UnixMilli()
			for _, l := range feedLogs {
				f.ApplyBatch([]*raft.Log{l})
				if slices.Contains(tc.flushAfter, l.Index) {
					mustFlush(t, s)
				}
				if l.Index == tc.crashAt {
					crash(s)
					s = openStore(t, dir)
					f = mustRange(t, s, feedRange)
					// Raft replays from its snapshot (none): the whole log.
					f.ApplyBatch(feedLogs)
					break
				}
			}
			after := time.Now().UnixMilli()
			if tc.restart {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openStore(t, dir)
				f = mustRange(t, s, feedRange)
			}
			defer s.Close()
			if f.AppliedIndex() != 10 {
				t.Fatalf("applied %d, want 10", f.AppliedIndex())
			}
			evs := allEvents(t, f, 0)
			checkEvents(t, "events after 0", evs, feedEvents)
			for _, e := range evs {
				if e.At < before || e.At > after {
					t.Errorf("event %d applied at %d, outside the apply's [%d, %d]", e.Index, e.At, before, after)
				}
			}
			checkEvents(t, "events after 4", allEvents(t, f, 4), feedEvents[4:])
			checkEvents(t, "events after 5", allEvents(t, f, 5), feedEvents[4:])
			checkEvents(t, "events after 10", allEvents(t, f, 10), nil)
			if fl := f.EventFloor(); fl != 0 {
				t.Errorf("floor %d, want 0: the default budget keeps everything", fl)
			}
		})
	}
}

// TestRangeFSM_EventsPaging: paging through the feed with after = upTo
// returns every event once, each page within its bounds, across the
// boundary between bbolt and the overlay.
func TestRangeFSM_EventsPaging(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	var logs []*raft.Log
	for i := uint64(1); i <= 20; i++ {
		logs = append(logs, put(i, fmt.Sprintf("k%02d", i), "0123456789"))
	}
	// A marker changes no key: no event at 21, but upTo reaches it.
	logs = append(logs, cmdLog(21, Command{Op: OpMarker}))
	f.ApplyBatch(logs[:12])
	mustFlush(t, s)
	f.ApplyBatch(logs[12:])
	oneSize := (&Event{Key: []byte("k01"), Value: []byte("0123456789")}).Size()

	tests := []struct {
		name          string
		max, maxBytes int
		pageLen       int // the most events a page may hold
	}{
		{"one at a time", 1, 1 << 20, 1},
		{"max 0 means one", 0, 1 << 20, 1},
		{"three at a time", 3, 1 << 20, 3},
		{"seven at a time", 7, 1 << 20, 7},
		{"everything", 100, 1 << 20, 20},
		{"one byte: one event a page", 100, 1, 1},
		{"bytes for two and a half", 100, oneSize*2 + oneSize/2, 3},
		// 0 is "no bound" elsewhere (Config.EventRetention*); whatever it
		// means here, a page must not claim upTo past events it left out.
		{"no byte budget", 100, 0, 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			after := uint64(0)
			for range 50 {
				evs, upTo, err := f.Events(after, tc.max, tc.maxBytes, true)
				if err != nil {
					t.Fatalf("events after %d: %v", after, err)
				}
				if len(evs) > tc.pageLen {
					t.Fatalf("events after %d: %d events, want at most %d", after, len(evs), tc.pageLen)
				}
				for _, e := range evs {
					if e.Index <= after || e.Index > upTo {
						t.Fatalf("events after %d (upTo %d) returned index %d", after, upTo, e.Index)
					}
					got = append(got, e.Index)
				}
				if upTo < after {
					t.Fatalf("events after %d: upTo %d went back", after, upTo)
				}
				if upTo == f.AppliedIndex() {
					break
				}
				if len(evs) == 0 || upTo != evs[len(evs)-1].Index {
					t.Fatalf("events after %d: a page cut short must end at its last event; upTo %d, %d events", after, upTo, len(evs))
				}
				after = upTo
			}
			want := make([]uint64, 20)
			for i := range want {
				want[i] = uint64(i + 1)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paged through %v, want %v", got, want)
			}
		})
	}

	// One page that starts in bbolt (durable through 12) and ends in the
	// overlay.
	evs, upTo, err := f.Events(10, 5, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if f.DurableIndex() != 12 {
		t.Fatalf("durable %d, want 12", f.DurableIndex())
	}
	checkEvents(t, "events after 10, five of them", evs, []string{
		"11 put k11=0123456789", "12 put k12=0123456789", "13 put k13=0123456789",
		"14 put k14=0123456789", "15 put k15=0123456789",
	})
	if upTo != 15 {
		t.Fatalf("upTo %d, want 15", upTo)
	}
}

// TestRangeFSM_EventRetentionBytes: a commit trims the oldest events past
// the byte budget; the floor is the last trimmed index, below it the feed
// is ErrCompacted, and both survive a restart.
func TestRangeFSM_EventRetentionBytes(t *testing.T) {
	// Ten puts of distinct keys (no previous values): every event is the
	// same size.
	one := (&Event{Key: []byte("k01"), Value: []byte("01234567")}).Size()
	tests := []struct {
		name      string
		budget    int64
		wantFloor uint64
	}{
		{"everything fits", int64(10 * one), 0},
		{"three fit", int64(3*one + one/2), 7},
		{"exactly three fit", int64(3 * one), 7},
		{"not even one fits", int64(one - 1), 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := func(c *Config) { c.EventRetentionBytes, c.EventRetentionAge = tc.budget, 0 }
			s := openStoreWith(t, dir, cfg)
			f := mustRange(t, s, feedRange)
			var logs []*raft.Log
			for i := uint64(1); i <= 10; i++ {
				logs = append(logs, put(i, fmt.Sprintf("k%02d", i), "01234567"))
			}
			f.ApplyBatch(logs)
			// Nothing is trimmed before a commit.
			if fl := f.EventFloor(); fl != 0 {
				t.Fatalf("floor %d before any commit, want 0", fl)
			}
			if n := len(allEvents(t, f, 0)); n != 10 {
				t.Fatalf("%d events before any commit, want 10", n)
			}
			mustFlush(t, s)
			check := func(step string) {
				t.Helper()
				floor := f.EventFloor()
				if floor != tc.wantFloor {
					t.Fatalf("%s: floor %d, want %d", step, floor, tc.wantFloor)
				}
				if floor > 0 {
					_, _, err := f.Events(floor-1, 100, 1<<20, true)
					if !errors.Is(err, ErrCompacted) {
						t.Fatalf("%s: events after %d, below the floor %d: %v, want ErrCompacted", step, floor-1, floor, err)
					}
					if _, _, err := f.Events(0, 100, 1<<20, true); !errors.Is(err, ErrCompacted) {
						t.Fatalf("%s: events after 0: %v, want ErrCompacted", step, err)
					}
				}
				evs := allEvents(t, f, floor)
				if len(evs) != int(10-floor) || (len(evs) > 0 && evs[0].Index != floor+1) {
					t.Fatalf("%s: events after the floor %d: %q, want %d..10", step, floor, evStrings(evs), floor+1)
				}
				size := 0
				for _, e := range evs {
					size += e.Size()
				}
				if int64(size) > tc.budget {
					t.Fatalf("%s: kept %d bytes of events, budget %d", step, size, tc.budget)
				}
			}
			check("after the commit")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStoreWith(t, dir, cfg)
			defer s.Close()
			f = mustRange(t, s, feedRange)
			check("after a restart")

			// Another commit trims more, counting what the restart
			// reloaded.
			f.ApplyBatch([]*raft.Log{put(11, "k11", "01234567"), put(12, "k12", "01234567")})
			mustFlush(t, s)
			// Every row's budget holds at most ten events: two more push
			// the floor up by two.
			if fl, want := f.EventFloor(), tc.wantFloor+2; fl != want {
				t.Fatalf("floor after two more events %d, want %d", fl, want)
			}
		})
	}
}

// TestRangeFSM_EventRetentionBytesAcrossManyLeaves: a commit that trims
// thousands of events, over many of bbolt's leaves (a full one, a part of
// another), keeps exactly the newest that fit, in order, and so does the
// next, which trims through leaves the first one rebalanced.
func TestRangeFSM_EventRetentionBytesAcrossManyLeaves(t *testing.T) {
	val := strings.Repeat("v", 200)
	one := (&Event{Key: []byte("k00000"), Value: []byte(val)}).Size()
	const keep = 1000
	s := openStoreWith(t, t.TempDir(), func(c *Config) {
		c.EventRetentionBytes, c.EventRetentionAge = int64(keep*one), 0
	})
	defer s.Close()
	f := mustRange(t, s, feedRange)
	next := uint64(1)
	apply := func(n int) {
		var logs []*raft.Log
		for range n {
			logs = append(logs, put(next, fmt.Sprintf("k%05d", next), val))
			next++
		}
		f.ApplyBatch(logs)
		mustFlush(t, s)
	}
	for _, n := range []int{3000, 1700} {
		apply(n)
		last := next - 1
		if fl, want := f.EventFloor(), last-keep; fl != want {
			t.Fatalf("after %d events: floor %d, want %d", last, fl, want)
		}
		evs := allEvents(t, f, last-keep)
		if len(evs) != keep {
			t.Fatalf("after %d events: %d kept, want %d", last, len(evs), keep)
		}
		for i, e := range evs {
			if want := last - keep + 1 + uint64(i); e.Index != want || string(e.Key) != fmt.Sprintf("k%05d", want) {
				t.Fatalf("after %d events: event %d is %d %q, want %d", last, i, e.Index, e.Key, want)
			}
		}
	}
}

// TestRangeFSM_EventRetentionAge: events older than the age budget go at
// the next commit. Their clock is rewritten in bbolt rather than waited
// for: the test then needs no sleep.
func TestRangeFSM_EventRetentionAge(t *testing.T) {
	tests := []struct {
		name      string
		aged      []uint64 // events whose clock is set two hours back
		wantFloor uint64
	}{
		{"none old", nil, 0},
		{"the oldest three", []uint64{1, 2, 3}, 3},
		{"all", []uint64{1, 2, 3, 4, 5, 6}, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStoreWith(t, t.TempDir(), func(c *Config) { c.EventRetentionBytes, c.EventRetentionAge = 0, time.Hour })
			defer s.Close()
			f := mustRange(t, s, feedRange)
			var logs []*raft.Log
			for i := uint64(1); i <= 6; i++ {
				logs = append(logs, put(i, fmt.Sprintf("k%02d", i), "v"))
			}
			f.ApplyBatch(logs)
			mustFlush(t, s)
			if fl := f.EventFloor(); fl != 0 {
				t.Fatalf("floor %d with young events, want 0", fl)
			}
			old := time.Now().Add(-2 * time.Hour).UnixMilli()
			if err := s.db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket(eventBucket(feedRange))
				for _, i := range tc.aged {
					key := eventKey(&Event{Index: i})
					v := bytes.Clone(b.Get(key))
					if len(v) < 10 {
						return fmt.Errorf("event %d: %d bytes", i, len(v))
					}
					binary.BigEndian.PutUint64(v[2:], uint64(old))
					if err := b.Put(key, v); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			f.ApplyBatch([]*raft.Log{put(7, "k07", "v")})
			mustFlush(t, s)
			if fl := f.EventFloor(); fl != tc.wantFloor {
				t.Fatalf("floor %d, want %d", fl, tc.wantFloor)
			}
			evs := allEvents(t, f, tc.wantFloor)
			if len(evs) != int(7-tc.wantFloor) {
				t.Fatalf("events after the floor: %q", evStrings(evs))
			}
			if tc.wantFloor > 0 {
				if _, _, err := f.Events(tc.wantFloor-1, 10, 1<<20, true); !errors.Is(err, ErrCompacted) {
					t.Fatalf("events below the floor: %v, want ErrCompacted", err)
				}
			}
		})
	}
}

// TestRangeFSM_EventsDuringATrimmingCommit: a reader never misses
// events silently. A commit trims the feed in bbolt before it raises the
// floor in memory (it takes the range's lock only once its transaction is
// durable); a reader in between must get ErrCompacted, not a feed with a
// hole at its start.
func TestRangeFSM_EventsDuringATrimmingCommit(t *testing.T) {
	s := openStoreWith(t, t.TempDir(), func(c *Config) { c.EventRetentionBytes, c.EventRetentionAge = 300, 0 })
	defer s.Close()
	f := mustRange(t, s, feedRange)
	done := make(chan struct{})
	holes := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			after := f.EventFloor()
			evs, _, err := f.Events(after, 1000, 1<<20, true)
			if err != nil {
				continue // ErrCompacted: the floor rose meanwhile
			}
			// Every entry is a put: the feed's indexes are consecutive.
			for i, e := range evs {
				if e.Index != after+1+uint64(i) {
					select {
					case holes <- fmt.Sprintf("events after %d returned %d at position %d (durable %d)", after, e.Index, i, f.DurableIndex()):
					default:
					}
					break
				}
			}
		}
	}()
	index := uint64(0)
	for range 300 {
		var logs []*raft.Log
		for range 3 {
			index++
			logs = append(logs, put(index, fmt.Sprintf("k%02d", index%50), "0123456789"))
		}
		f.ApplyBatch(logs)
		mustFlush(t, s)
	}
	close(done)
	wg.Wait()
	select {
	case h := <-holes:
		t.Fatal(h)
	default:
	}
	if f.EventFloor() == 0 {
		t.Fatal("the feed was never trimmed: the test tested nothing")
	}
}

// TestRangeFSM_SplitEventsAndLeases: the parent's feed records the split
// with the child's descriptor; the child's feed starts empty at 0 and
// records its own writes; leased keys that moved are the child's.
func TestRangeFSM_SplitEventsAndLeases(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := openUserRange(t, s, feedRange)
	f.ApplyBatch([]*raft.Log{
		leasePut(1, "k010", "a", 7),
		leasePut(2, "k070", "b", 7),
		put(3, "k020", "c"),
	})
	mustFlush(t, s)
	// Still in the overlay when the split applies.
	f.ApplyBatch([]*raft.Log{leasePut(4, "k080", "d", 9), leasePut(5, "k030", "e", 9)})
	res := f.ApplyBatch([]*raft.Log{splitLog(6, "k050", 3)})
	if r := res[0].(*Result); r.Err != nil {
		t.Fatalf("split: %v", r.Err)
	}
	wantChild := Descriptor{ID: 3, Start: []byte("k050"), Generation: 2, Replicas: []string{"n1", "n2", "n3"}}
	parentEvents := []string{
		"1 put k010=a lease=7",
		"2 put k070=b lease=7",
		"3 put k020=c",
		"4 put k080=d lease=9",
		"5 put k030=e lease=9",
		"6 split " + wantChild.String(),
	}
	checkEvents(t, "parent", allEvents(t, f, 0), parentEvents)
	child := openUserRange(t, s, 3)
	if fl := child.EventFloor(); fl != 0 {
		t.Fatalf("child floor %d, want 0", fl)
	}
	checkEvents(t, "child before its own writes", allEvents(t, child, 0), nil)

	leaseTests := []struct {
		name  string
		r     *RangeFSM
		lease uint64
		want  []string
	}{
		{"parent, lease 7", f, 7, []string{"k010"}},
		{"child, lease 7", child, 7, []string{"k070"}},
		{"parent, lease 9", f, 9, []string{"k030"}},
		{"child, lease 9", child, 9, []string{"k080"}},
	}
	checkLeases := func(step string) {
		t.Helper()
		for _, tc := range leaseTests {
			keys, err := tc.r.LeaseKeys(tc.lease)
			if err != nil {
				t.Fatalf("%s: %s: %v", step, tc.name, err)
			}
			if got := byteStrings(keys); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %s: keys %q, want %q", step, tc.name, got, tc.want)
			}
		}
	}
	checkLeases("after the split")

	// The split and the child's keys are durable: a crash keeps them.
	crash(s)
	s = openStore(t, dir)
	defer s.Close()
	f = openUserRange(t, s, feedRange)
	child = openUserRange(t, s, 3)
	checkEvents(t, "parent after a crash", allEvents(t, f, 0), parentEvents)
	leaseTests[0].r, leaseTests[1].r, leaseTests[2].r, leaseTests[3].r = f, child, f, child
	checkLeases("after a crash")

	// The child's log starts at 1; a revoke of lease 7 there takes only
	// the key that moved.
	res = child.ApplyBatch([]*raft.Log{put(1, "k090", "f"), revoke(2, 7, CauseLeaseRevoked)})
	if d := res[1].(*Result).Deleted; d != 1 {
		t.Fatalf("child revoke deleted %d keys, want 1", d)
	}
	checkEvents(t, "child", allEvents(t, child, 0), []string{
		"1 put k090=f",
		fmt.Sprintf("2 del k070 prev=b lease=7 cause=%d", CauseLeaseRevoked),
	})
	mustGet(t, f, "k010", "a")
	checkEvents(t, "parent after the child's writes", allEvents(t, f, 0), parentEvents)
}

func byteStrings(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	slices.Sort(out)
	return out
}

// TestRangeFSM_RestoreResetsFeed: a replica that installs a snapshot has
// no events before it (floor = the snapshot's index) and a lease index
// rebuilt from the snapshot's keys.
func TestRangeFSM_RestoreResetsFeed(t *testing.T) {
	src := openStore(t, t.TempDir())
	defer src.Close()
	f := mustRange(t, src, feedRange)
	f.ApplyBatch([]*raft.Log{leasePut(1, "a", "1", 5), leasePut(2, "b", "2", 5), put(3, "c", "3")})
	mustFlush(t, src)
	f.ApplyBatch([]*raft.Log{leasePut(4, "d", "4", 6), put(5, "b", "2b")}) // b leaves lease 5
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	dir := t.TempDir()
	dst := openStore(t, dir)
	g := mustRange(t, dst, feedRange)
	// The replica's own history before the snapshot: it must go, events
	// and lease index both.
	g.ApplyBatch([]*raft.Log{leasePut(1, "old", "x", 5), put(2, "e", "y")})
	mustFlush(t, dst)
	g.ApplyBatch([]*raft.Log{leasePut(3, "old2", "x", 6)})
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	check := func(step string, g *RangeFSM) {
		t.Helper()
		if fl := g.EventFloor(); fl != 5 {
			t.Fatalf("%s: floor %d, want the snapshot's index 5", step, fl)
		}
		for _, after := range []uint64{0, 4} {
			if _, _, err := g.Events(after, 10, 1<<20, true); !errors.Is(err, ErrCompacted) {
				t.Fatalf("%s: events after %d: %v, want ErrCompacted", step, after, err)
			}
		}
		checkEvents(t, step+": events after 5", allEvents(t, g, 5), nil)
		for _, tc := range []struct {
			lease uint64
			want  []string
		}{{5, []string{"a"}}, {6, []string{"d"}}} {
			keys, err := g.LeaseKeys(tc.lease)
			if err != nil {
				t.Fatal(err)
			}
			if got := byteStrings(keys); !slices.Equal(got, tc.want) {
				t.Fatalf("%s: lease %d keys %q, want %q", step, tc.lease, got, tc.want)
			}
		}
		leases, err := g.Leases()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(leases)
		if !slices.Equal(leases, []uint64{5, 6}) {
			t.Fatalf("%s: leases %v, want [5 6]", step, leases)
		}
		mustGet(t, g, "a", "1")
		mustGet(t, g, "b", "2b")
		mustMissing(t, g, "old")
	}
	check("after the restore", g)
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openStore(t, dir)
	defer dst.Close()
	g = mustRange(t, dst, feedRange)
	check("after a restart", g)

	res := g.ApplyBatch([]*raft.Log{revoke(6, 5, CauseLeaseExpired)})
	if d := res[0].(*Result).Deleted; d != 1 {
		t.Fatalf("revoke after restore deleted %d keys, want 1", d)
	}
	checkEvents(t, "after a revoke", allEvents(t, g, 5), []string{fmt.Sprintf("6 del a prev=1 lease=5 cause=%d", CauseLeaseExpired)})
	mustGet(t, g, "b", "2b")
}

// TestRangeFSM_Leases: a lease put attaches its key, a later plain put or
// delete detaches it, and a revoke deletes exactly the attached keys, with
// delete events naming the lease and the cause, wherever the keys live.
func TestRangeFSM_Leases(t *testing.T) {
	logs := []*raft.Log{
		leasePut(1, "a", "1", 5),
		leasePut(2, "b", "2", 5),
		leasePut(3, "c", "3", 6),
		put(4, "d", "4"),
		leasePut(5, "e", "5", 5),
		put(6, "e", "5b"), // detaches e
		leasePut(7, "f", "6", 5),
		del(8, "f"),
		leasePut(9, "g", "7", 6),
		leasePut(10, "g", "7b", 5), // moves g from lease 6 to 5
	}
	tests := []struct {
		name       string
		flushAfter []uint64
		restart    bool // close and reopen before the revokes
	}{
		{name: "overlay"},
		{name: "bbolt", flushAfter: []uint64{10}},
		{name: "some in each", flushAfter: []uint64{3, 9}},
		{name: "restarted", flushAfter: []uint64{5}, restart: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			f := mustRange(t, s, feedRange)
			for _, l := range logs {
				f.ApplyBatch([]*raft.Log{l})
				if slices.Contains(tc.flushAfter, l.Index) {
					mustFlush(t, s)
				}
			}
			if tc.restart {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openStore(t, dir)
				f = mustRange(t, s, feedRange)
			}
			defer s.Close()

			leaseKeys := func(step string, lease uint64, want ...string) {
				t.Helper()
				keys, err := f.LeaseKeys(lease)
				if err != nil {
					t.Fatal(err)
				}
				if got := byteStrings(keys); !slices.Equal(got, want) {
					t.Fatalf("%s: lease %d keys %q, want %q", step, lease, got, want)
				}
			}
			checkEvents(t, "events of the puts", allEvents(t, f, 0), []string{
				"1 put a=1 lease=5",
				"2 put b=2 lease=5",
				"3 put c=3 lease=6",
				"4 put d=4",
				"5 put e=5 lease=5",
				"6 put e=5b prev=5",
				"7 put f=6 lease=5",
				"8 del f prev=6",
				"9 put g=7 lease=6",
				"10 put g=7b prev=7 lease=5",
			})
			leaseKeys("before revokes", 5, "a", "b", "g")
			leaseKeys("before revokes", 6, "c")
			leaseKeys("before revokes", 8)
			leases, err := f.Leases()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(leases)
			if !slices.Equal(leases, []uint64{5, 6}) {
				t.Fatalf("leases %v, want [5 6]", leases)
			}

			// The stored lease is no part of the value: reads and the
			// digest match a range that wrote the same without leases.
			mustGet(t, f, "a", "1")
			if _, rev, _, _, _ := f.Get([]byte("g")); rev != 10 {
				t.Fatalf("g's revision %d, want 10", rev)
			}
			kvs, _, _, _, err := f.Scan(nil, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range kvs {
				got = append(got, fmt.Sprintf("%s=%s@%d", kv.Key, kv.Value, kv.Revision))
			}
			if want := []string{"a=1@1", "b=2@2", "c=3@3", "d=4@4", "e=5b@6", "g=7b@10"}; !slices.Equal(got, want) {
				t.Fatalf("scan %q, want %q", got, want)
			}
			// The digest covers leases (they decide what a revoke deletes):
			// the same writes without them sum differently, with the same
			// applied index and key count.
			if d, plain := mustDigest(t, f), plainDigest(t, logs); d.Sum == plain.Sum || d.Applied != plain.Applied || d.Keys != plain.Keys {
				t.Fatalf("digest %+v vs %+v without leases: want a different sum, the same index and keys", d, plain)
			}

			res := f.ApplyBatch([]*raft.Log{
				revoke(11, 5, CauseLeaseRevoked),
				revoke(12, 5, CauseLeaseRevoked),
				revoke(13, 6, CauseLeaseExpired),
				revoke(14, 8, CauseLeaseExpired),
			})
			for i, want := range []int{3, 0, 1, 0} {
				r := res[i].(*Result)
				if r.Err != nil || r.Deleted != want || r.Revision != uint64(11+i) {
					t.Errorf("revoke at %d: %+v, want %d deleted", 11+i, r, want)
				}
			}
			checkEvents(t, "events of the revokes", allEvents(t, f, 10), []string{
				fmt.Sprintf("11 del a prev=1 lease=5 cause=%d", CauseLeaseRevoked),
				fmt.Sprintf("11 del b prev=2 lease=5 cause=%d", CauseLeaseRevoked),
				fmt.Sprintf("11 del g prev=7b lease=5 cause=%d", CauseLeaseRevoked),
				fmt.Sprintf("13 del c prev=3 lease=6 cause=%d", CauseLeaseExpired),
			})
			for _, k := range []string{"a", "b", "c", "g"} {
				mustMissing(t, f, k)
			}
			mustGet(t, f, "d", "4")
			mustGet(t, f, "e", "5b")
			leaseKeys("after revokes", 5)
			leaseKeys("after revokes", 6)

			mustFlush(t, s)
			leases, err = f.Leases()
			if err != nil {
				t.Fatal(err)
			}
			if len(leases) != 0 {
				t.Fatalf("leases after revoking all and committing: %v, want none", leases)
			}
			// The lease index is clean in bbolt too: a lease put again
			// attaches only its new key.
			f.ApplyBatch([]*raft.Log{leasePut(15, "h", "8", 5)})
			mustFlush(t, s)
			leaseKeys("lease reused", 5, "h")
		})
	}
}

func mustDigest(t *testing.T, f *RangeFSM) Digest {
	t.Helper()
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// plainDigest is the digest of logs applied with every lease put made a
// plain put.
func plainDigest(t *testing.T, logs []*raft.Log) Digest {
	t.Helper()
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, feedRange)
	for _, l := range logs {
		c, err := DecodeCommand(l.Data)
		if err != nil {
			t.Fatal(err)
		}
		if c.Op == OpPutLease {
			c.Op, c.Lease = OpPut, 0
		}
		f.ApplyBatch([]*raft.Log{cmdLog(l.Index, c)})
	}
	return mustDigest(t, f)
}

// TestRangeFSM_FeedOfAnUpgradedRange: a range that applied entries under
// a release without events starts its feed at its applied index.
func TestRangeFSM_FeedOfAnUpgradedRange(t *testing.T) {
	tests := []struct {
		name    string
		applied uint64
		drop    [][]byte // meta keys deleted before the reopen
		buckets [][]byte // buckets deleted before the reopen
		want    uint64
	}{
		{"floor key dropped", 5, [][]byte{eventFloorKey(feedRange)}, nil, 5},
		{"no trace of a feed", 5, [][]byte{eventFloorKey(feedRange), eventSizeKey(feedRange)},
			[][]byte{eventBucket(feedRange), leaseBucket(feedRange)}, 5},
		{"floor kept", 5, nil, nil, 0},
		{"nothing applied", 0, [][]byte{eventFloorKey(feedRange)}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			f := mustRange(t, s, feedRange)
			for i := uint64(1); i <= tc.applied; i++ {
				f.ApplyBatch([]*raft.Log{put(i, fmt.Sprintf("k%d", i), "v")})
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				for _, k := range tc.drop {
					if err := tx.Bucket(metaBucket).Delete(k); err != nil {
						return err
					}
				}
				for _, b := range tc.buckets {
					if err := tx.DeleteBucket(b); err != nil {
						return err
					}
				}
				return nil
			})
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			t.Cleanup(func() { s.Close() }) // s is reopened below
			f = mustRange(t, s, feedRange)
			if fl := f.EventFloor(); fl != tc.want {
				t.Fatalf("floor %d, want %d", fl, tc.want)
			}
			if tc.want > 0 {
				if _, _, err := f.Events(tc.want-1, 10, 1<<20, true); !errors.Is(err, ErrCompacted) {
					t.Fatalf("events below the floor: %v, want ErrCompacted", err)
				}
			}
			f.ApplyBatch([]*raft.Log{put(tc.applied+1, "new", "v")})
			mustFlush(t, s)
			evs := allEvents(t, f, tc.want)
			if len(evs) == 0 || evString(evs[len(evs)-1]) != fmt.Sprintf("%d put new=v", tc.applied+1) {
				t.Fatalf("events after the floor: %q, want them to end with the new put", evStrings(evs))
			}
			// The floor is recorded: a second reopen keeps it.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dir)
			f = mustRange(t, s, feedRange)
			if fl := f.EventFloor(); fl != tc.want {
				t.Fatalf("floor after a second reopen %d, want %d", fl, tc.want)
			}
		})
	}
}

// TestEvent_EncodeRoundTrip: what the committer writes, a reader decodes,
// and a damaged event is ErrCorrupt, not a panic.
func TestEvent_EncodeRoundTrip(t *testing.T) {
	child := Descriptor{ID: 9, Start: []byte("m"), Generation: 3, Replicas: []string{"n1"}}
	tests := []Event{
		{Index: 1, Type: EventPut, Key: []byte("k"), Value: []byte("v"), At: 1234},
		{Index: 2, Type: EventPut, Key: []byte("k"), Value: nil, PrevValue: []byte("old"), PrevExists: true, Lease: 1 << 40, At: 5},
		{Index: 3, Type: EventDelete, Key: []byte("\x00\xff"), PrevValue: []byte{}, PrevExists: true, Lease: 7, Cause: CauseLeaseExpired},
		{Index: 4, Type: EventSplit, Child: &child, At: 99},
	}
	for _, e := range tests {
		t.Run(evString(e), func(t *testing.T) {
			b := e.encode()
			got, err := decodeEvent(e.Index, b)
			if err != nil {
				t.Fatal(err)
			}
			if evString(got) != evString(e) || got.At != e.At {
				t.Fatalf("round trip of %q at %d gave %q at %d", evString(e), e.At, evString(got), got.At)
			}
			for n := range len(b) {
				if _, err := decodeEvent(e.Index, b[:n]); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%d of %d bytes: %v, want ErrCorrupt", n, len(b), err)
				}
			}
		})
	}
}

// One write that deletes several keys (a lease's end) records an event per
// key at one index: all of them survive the commit to bbolt, in order, and
// a page never ends between them (found by the Jepsen-style lease
// workload: only the last key's delete reached a watch that read from
// bbolt).
func TestRangeFSM_EventsOfOneIndexAllKept(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprintf("flushed=%v", flush), func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f := mustRange(t, s, feedRange)
			f.ApplyBatch([]*raft.Log{
				leasePut(1, "a", "1", 7), leasePut(2, "b", "2", 7), leasePut(3, "c", "3", 7),
				revoke(4, 7, CauseLeaseExpired), put(5, "d", "4"),
			})
			if flush {
				mustFlush(t, s)
			}
			for _, pageSize := range []int{1, 2, 100} {
				var got []string
				after := uint64(3)
				for page := 0; page < 10 && after < 5; page++ {
					evs, upTo, err := f.Events(after, pageSize, 1<<20, true)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range evs {
						got = append(got, fmt.Sprintf("%d:%s:%d", e.Index, e.Key, e.Cause))
					}
					after = upTo
				}
				want := []string{"4:a:1", "4:b:1", "4:c:1", "5:d:0"}
				if !slices.Equal(got, want) {
					t.Errorf("page size %d: events %q, want %q", pageSize, got, want)
				}
			}
		})
	}
}
