package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// TestWAL_MatchesInmemStores drives many ranges at once from several
// goroutines, each range checked after every operation against a
// raft.InmemStore: random appends (some syncing behind), suffix and
// prefix cuts, clears, stable values, range drops and re-creations, while
// another goroutine seals segments and runs the collector (forcing every
// sealed segment to be copied forward half the time). Between phases the
// log is closed and reopened and every range checked again.
func TestWAL_MatchesInmemStores(t *testing.T) {
	const (
		workers         = 4
		rangesPerWorker = 3
		phases          = 4
	)
	opsPerPhase := 120
	if testing.Short() {
		opsPerPhase = 30
	}
	dir := t.TempDir()
	opts := Options{SegmentSize: 8 << 10, CacheBytes: 64 << 10}
	open := func() *WAL {
		w := testOpenDir(t, dir, opts)
		// Durability is the crash test's subject; here real syncs would
		// only slow the run down.
		w.SetSyncFunc(func(func() error) error { return nil })
		return w
	}
	w := open()
	models := map[uint64]*inmemModel{}
	for id := uint64(1); id <= workers*rangesPerWorker; id++ {
		models[id] = newInmemModel()
	}
	for phase := 0; phase < phases; phase++ {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		gcDone := make(chan struct{})
		go func() {
			defer close(gcDone)
			rng := rand.New(rand.NewPCG(uint64(phase), 1000))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if rng.IntN(3) == 0 {
					err = w.rotate()
				} else {
					_, err = w.collect(rng.IntN(2) == 0)
				}
				if err != nil {
					t.Errorf("collector: %v", err)
					return
				}
			}
		}()
		for g := 0; g < workers; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(phase), uint64(g)))
				for i := 0; i < opsPerPhase; i++ {
					id := uint64(g*rangesPerWorker + 1 + rng.IntN(rangesPerWorker))
					if err := models[id].step(w, id, rng); err != nil {
						t.Errorf("phase %d, worker %d, op %d: %v", phase, g, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		<-gcDone
		if t.Failed() {
			return
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w = open()
		for id, m := range models {
			if err := m.check(w.Range(id)); err != nil {
				t.Fatalf("after reopening (phase %d): %v", phase, err)
			}
		}
	}
	st := w.Stats()
	t.Logf("%+v", st)
}

// inmemModel is one range's model: a raft.InmemStore, and the term to
// write in.
type inmemModel struct {
	store  *raft.InmemStore
	term   uint64
	behind bool
}

func newInmemModel() *inmemModel { return &inmemModel{store: raft.NewInmemStore(), term: 1} }

var (
	uintKeys  = []string{"CurrentTerm", "LastVoteTerm"}
	bytesKeys = []string{"LastVoteCand"}
)

// step does one random operation to range id in w and in the model, then
// compares them.
func (m *inmemModel) step(w *WAL, id uint64, rng *rand.Rand) error {
	v := w.Range(id)
	v.SetSyncBehind(func() bool { return m.behind })
	first, _ := m.store.FirstIndex()
	last, _ := m.store.LastIndex()
	var err error
	switch op := rng.IntN(100); {
	case op < 50:
		m.behind = rng.IntN(2) == 0
		n := uint64(1 + rng.IntN(20))
		from := last + 1
		if last == 0 {
			from = uint64(1 + rng.IntN(50))
		}
		batch := entries(id, from, from+n-1, m.term)
		if err = v.StoreLogs(batch); err == nil {
			m.store.StoreLogs(batch)
		}
	case op < 60 && last > first:
		cut := first + 1 + uint64(rng.IntN(int(last-first)))
		m.term++
		if err = v.DeleteRange(cut, last); err == nil {
			m.store.DeleteRange(cut, last)
		}
	case op < 70 && last > first:
		upTo := first + uint64(rng.IntN(int(last-first)))
		if err = v.DeleteRange(first, upTo); err == nil {
			m.store.DeleteRange(first, upTo)
		}
	case op < 73 && last > 0:
		// As after a snapshot install: everything, then more from higher up.
		if err = v.DeleteRange(0, ^uint64(0)); err == nil {
			m.store.DeleteRange(first, last)
		}
	case op < 85:
		if rng.IntN(2) == 0 {
			k, val := uintKeys[rng.IntN(len(uintKeys))], rng.Uint64()
			if err = v.SetUint64([]byte(k), val); err == nil {
				m.store.SetUint64([]byte(k), val)
			}
		} else {
			k, val := bytesKeys[0], fmt.Appendf(nil, "n%d", rng.IntN(5))
			if err = v.Set([]byte(k), val); err == nil {
				m.store.Set([]byte(k), val)
			}
		}
	case op < 88:
		if err = w.DropRange(id); err == nil {
			m.store = raft.NewInmemStore()
			v = w.Range(id)
		}
	case op < 95:
		// Reads from anywhere in the log, cache or disk.
		if last > 0 {
			i := first + uint64(rng.IntN(int(last-first+1)))
			var got, want raft.Log
			if err = v.GetLog(i, &got); err == nil {
				m.store.GetLog(i, &want)
				if !sameEntry(&got, &want) {
					return fmt.Errorf("range %d: entry %d = %q, want %q", id, i, got.Data, want.Data)
				}
			}
		}
	default:
		_, err = v.FirstIndex()
	}
	if err != nil {
		return fmt.Errorf("range %d: %w", id, err)
	}
	if last, _ := v.LastIndex(); v.WaitSynced(last) != nil || v.SyncedIndex() < last {
		return fmt.Errorf("range %d: entries up to %d never became durable (synced %d)", id, last, v.SyncedIndex())
	}
	return m.check(v)
}

// check compares the whole range with the model.
func (m *inmemModel) check(v *RangeLog) error {
	first, _ := m.store.FirstIndex()
	last, _ := m.store.LastIndex()
	want := &modelRange{stable: map[string][]byte{}}
	for i := first; i <= last && last > 0; i++ {
		e := new(raft.Log)
		if err := m.store.GetLog(i, e); err != nil {
			return fmt.Errorf("model: %v", err)
		}
		want.logs = append(want.logs, e)
	}
	for _, k := range uintKeys {
		if val, _ := m.store.GetUint64([]byte(k)); val != 0 {
			got, err := v.GetUint64([]byte(k))
			if err != nil || got != val {
				return fmt.Errorf("range %d: %s = %d, %v; want %d", v.id, k, got, err, val)
			}
			want.stable[k] = nil // compared above
		}
	}
	for _, k := range bytesKeys {
		if val, err := m.store.Get([]byte(k)); err == nil {
			got, err := v.Get([]byte(k))
			if err != nil || !bytes.Equal(got, val) {
				return fmt.Errorf("range %d: %s = %q, %v; want %q", v.id, k, got, err, val)
			}
			want.stable[k] = nil
		} else if _, err := v.Get([]byte(k)); err == nil {
			return fmt.Errorf("range %d: %s set, want it missing", v.id, k)
		}
	}
	// Stable values were compared above; diffRange compares the keys.
	v.mu.RLock()
	for k := range want.stable {
		want.stable[k] = v.stable[k].val
	}
	extra := len(v.stable) != len(want.stable)
	v.mu.RUnlock()
	if extra {
		return fmt.Errorf("range %d: stable keys beyond the model's", v.id)
	}
	if err := diffRange(v, want); err != nil && !errors.Is(err, ErrDropped) {
		return err
	}
	return nil
}
