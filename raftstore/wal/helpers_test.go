package wal

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// entry returns range r's entry at index in term: its data names all
// three, so an entry found in the wrong range or in place of a cut one
// is seen at once.
func entry(r, index, term uint64) *raft.Log {
	e := &raft.Log{Index: index, Term: term, Type: raft.LogCommand,
		Data:       fmt.Appendf(nil, "range %d index %d term %d", r, index, term),
		AppendedAt: time.Unix(0, int64(index)*1000+int64(r))}
	if index%7 == 0 {
		e.Extensions = []byte("ext")
	}
	if index%11 == 0 {
		e.Type = raft.LogConfiguration
	}
	return e
}

func entries(r, from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(r, i, term))
	}
	return out
}

func sameEntry(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data) &&
		bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

// modelRange is what a range should hold: its entries (consecutive) and
// stable values.
type modelRange struct {
	logs   []*raft.Log
	stable map[string][]byte
}

func (m *modelRange) clone() *modelRange {
	return &modelRange{logs: slices.Clone(m.logs), stable: maps.Clone(m.stable)}
}

// apply does to the model what the operation does to the log.
func (m *modelRange) store(logs []*raft.Log) { m.logs = append(m.logs, logs...) }

func (m *modelRange) deleteRange(min, max uint64) {
	m.logs = slices.DeleteFunc(m.logs, func(e *raft.Log) bool { return e.Index >= min && e.Index <= max })
}

func (m *modelRange) firstLast() (uint64, uint64) {
	if len(m.logs) == 0 {
		return 0, 0
	}
	return m.logs[0].Index, m.logs[len(m.logs)-1].Index
}

// checkRange asserts that v holds exactly want (nil: nothing).
func checkRange(t testing.TB, v *RangeLog, want *modelRange) {
	t.Helper()
	if err := diffRange(v, want); err != nil {
		t.Fatal(err)
	}
}

func diffRange(v *RangeLog, want *modelRange) error {
	if want == nil {
		want = &modelRange{}
	}
	first, err := v.FirstIndex()
	if err != nil {
		return err
	}
	last, _ := v.LastIndex()
	wf, wl := want.firstLast()
	if first != wf || last != wl {
		return fmt.Errorf("range %d: log [%d, %d], want [%d, %d]", v.id, first, last, wf, wl)
	}
	for _, w := range want.logs {
		var got raft.Log
		if err := v.GetLog(w.Index, &got); err != nil {
			return fmt.Errorf("range %d: entry %d: %v", v.id, w.Index, err)
		}
		if !sameEntry(&got, w) {
			return fmt.Errorf("range %d: entry %d = %q (term %d), want %q (term %d)", v.id, w.Index, got.Data, got.Term, w.Data, w.Term)
		}
	}
	var e raft.Log
	if err := v.GetLog(last+1, &e); !errors.Is(err, raft.ErrLogNotFound) {
		return fmt.Errorf("range %d: entry after the last: %v", v.id, err)
	}
	if first > 1 {
		if err := v.GetLog(first-1, &e); !errors.Is(err, raft.ErrLogNotFound) {
			return fmt.Errorf("range %d: entry before the first: %v", v.id, err)
		}
	}
	v.mu.RLock()
	got := make(map[string][]byte, len(v.stable))
	for k, s := range v.stable {
		got[k] = s.val
	}
	v.mu.RUnlock()
	if len(want.stable) == 0 && len(got) == 0 {
		return nil
	}
	if !maps.EqualFunc(got, want.stable, bytes.Equal) {
		return fmt.Errorf("range %d: stable values %q, want %q", v.id, got, want.stable)
	}
	return nil
}

// testOpen opens a log on fsys for a test: no collection unless the test
// asks, and a failed sync fails the test instead of stopping it.
func testOpen(t testing.TB, fsys fileSystem, opts Options) *WAL {
	t.Helper()
	k := knobs{noAutoGC: true, failed: func(err error) { t.Logf("sync failed: %v", err) }}
	if m, ok := fsys.(*memFS); ok {
		k.appended = m.noteAppend
	}
	w, err := open(fsys, opts, k)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func testOpenDir(t testing.TB, dir string, opts Options) *WAL {
	t.Helper()
	return testOpen(t, osFS{dir: dir}, opts)
}

func mustStore(t testing.TB, v *RangeLog, logs []*raft.Log) {
	t.Helper()
	if err := v.StoreLogs(logs); err != nil {
		t.Fatalf("range %d: store %d-%d: %v", v.id, logs[0].Index, logs[len(logs)-1].Index, err)
	}
}

// rotate seals the active segment, as if it had filled.
func (w *WAL) rotate() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.rotateLocked()
	return err
}

// pendLen returns the length of the active segment's unwritten tail.
func (w *WAL) pendLen() int {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return len(w.segs[len(w.segs)-1].pend)
}
