package wal

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestWAL_CrashRecovery runs random operations on several ranges over a
// file system that remembers what was synced, and at random moments,
// always at every sync, takes what a crash there could leave: the durable
// state plus some of the unsynced writes, torn or out of order. Every
// such image must reopen to exactly the state after the operations whose
// writes it holds before the first one it lacks: so every acknowledged
// append is there, no cut or dropped entry comes back, and no range sees
// another's entries (each entry's data names its range, index and term).
func TestWAL_CrashRecovery(t *testing.T) {
	ops := 1500
	if testing.Short() {
		ops = 300
	}
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runCrashTest(t, seed, ops) })
	}
}

type crashModel map[uint64]*modelRange

func (m crashModel) clone() crashModel {
	out := make(crashModel, len(m))
	for id, r := range m {
		out[id] = r.clone()
	}
	return out
}

func runCrashTest(t *testing.T, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	imgRng := rand.New(rand.NewPCG(seed, 100)) // guarded by imgMu
	checkRng := rand.New(rand.NewPCG(seed, 101))
	fsys := newMemFS()
	// curOp tags writes; acked counts the operations up to the last one
	// that wrote a record and returned promising it durable (all but an
	// append syncing behind): a crash image must hold at least those.
	// Only the operation's own records count: while an operation that
	// writes none runs (a rotation, a collection with nothing to copy),
	// the syncer may write an earlier one's append, syncing behind, which
	// no image need hold yet.
	var curOp, acked atomic.Int64
	fsys.tag = func() int { return int(curOp.Load()) }
	var imgMu sync.Mutex
	var images []crashImage
	fsys.after = func(m *memFS, what string) {
		// Called with m.mu held, from whichever goroutine changed it.
		imgMu.Lock()
		defer imgMu.Unlock()
		if what[:4] == "sync" || what[:4] == "remo" || what[:4] == "rena" || imgRng.IntN(4) == 0 {
			img := m.image(imgRng, what)
			img.acked = int(acked.Load())
			images = append(images, img)
		}
	}
	opts := Options{SegmentSize: 1500, CacheBytes: 4 << 10}
	w := testOpen(t, fsys, opts)

	const ranges = 4
	model := crashModel{}
	term := map[uint64]uint64{}
	behind := map[uint64]*atomic.Bool{}
	for id := uint64(1); id <= ranges; id++ {
		model[id] = &modelRange{stable: map[string][]byte{}}
		term[id] = 1
		behind[id] = new(atomic.Bool)
		flag := behind[id]
		w.Range(id).SetSyncBehind(flag.Load)
	}
	states := []crashModel{model.clone()} // states[i]: after ops 0..i-1
	checked := 0

	checkImages := func() {
		imgMu.Lock()
		pending := images
		images = nil
		imgMu.Unlock()
		for _, img := range pending {
			checked++
			if img.ops < img.acked {
				t.Fatalf("%v: operations up to %d were acknowledged as durable", img, img.acked)
			}
			want := states[img.ops]
			rw, err := open(memFSFromImage(img), opts, knobs{noAutoGC: true, failed: func(err error) { t.Errorf("sync failed: %v", err) }})
			if err != nil {
				t.Fatalf("%v: reopen: %v", img, err)
			}
			for id := uint64(1); id <= ranges; id++ {
				if err := diffRange(rw.Range(id), want[id]); err != nil {
					rw.Close()
					t.Fatalf("%v: %v", img, err)
				}
			}
			for _, id := range rw.Ranges() {
				if id < 1 || id > ranges {
					t.Fatalf("%v: a range %d that never existed", img, id)
				}
			}
			if checkRng.IntN(8) == 0 {
				// The log takes appends after what the crash cut.
				v := rw.Range(1)
				_, last := want[1].firstLast()
				if err := v.StoreLogs(entries(1, last+1, last+2, 1000)); err != nil {
					t.Fatalf("%v: append after reopen: %v", img, err)
				}
			}
			rw.Close()
		}
	}

	for i := 0; i < ops; i++ {
		curOp.Store(int64(i))
		id := uint64(1 + rng.IntN(ranges))
		v := w.Range(id)
		m := model[id]
		first, last := m.firstLast()
		var desc string
		var err error
		durable := true
		switch op := rng.IntN(100); {
		case op < 45:
			behind[id].Store(rng.IntN(2) == 0)
			durable = !behind[id].Load()
			n := uint64(1 + rng.IntN(6))
			from := last + 1
			if last == 0 {
				from = uint64(1 + rng.IntN(40))
			}
			batch := entries(id, from, from+n-1, term[id])
			desc = fmt.Sprintf("append %d-%d to range %d", from, from+n-1, id)
			if err = v.StoreLogs(batch); err == nil {
				m.store(batch)
			}
		case op < 55 && last > first:
			cut := first + 1 + uint64(rng.IntN(int(last-first)))
			term[id]++
			desc = fmt.Sprintf("cut range %d from %d", id, cut)
			if err = v.DeleteRange(cut, last); err == nil {
				m.deleteRange(cut, last)
			}
		case op < 63 && last > first:
			upTo := first + uint64(rng.IntN(int(last-first)))
			desc = fmt.Sprintf("compact range %d to %d", id, upTo)
			if err = v.DeleteRange(first, upTo); err == nil {
				m.deleteRange(first, upTo)
			}
		case op < 66 && last > 0:
			desc = fmt.Sprintf("clear range %d", id)
			if err = v.DeleteRange(first, last); err == nil {
				m.deleteRange(first, last)
			}
		case op < 78:
			key := []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand"}[rng.IntN(3)]
			val := fmt.Appendf(nil, "%s of %d at %d", key, id, i)
			desc = fmt.Sprintf("set %s of range %d", key, id)
			if err = v.Set([]byte(key), val); err == nil {
				m.stable[key] = val
			}
		case op < 81:
			desc = fmt.Sprintf("drop range %d", id)
			if err = w.DropRange(id); err == nil {
				model[id] = &modelRange{stable: map[string][]byte{}}
				w.Range(id).SetSyncBehind(behind[id].Load)
			}
		case op < 90:
			desc = "collect"
			_, err = w.collect(rng.IntN(2) == 0)
		default:
			desc = "rotate"
			err = w.rotate()
		}
		if err != nil {
			t.Fatalf("op %d (%s): %v", i, desc, err)
		}
		states = append(states, model.clone())
		if durable && fsys.recordWritesBy(i) > 0 {
			acked.Store(int64(i + 1))
		}
		checkImages()
		if i%50 == 0 {
			for id := uint64(1); id <= ranges; id++ {
				checkRange(t, w.Range(id), model[id])
			}
		}
	}
	if checked < ops {
		t.Fatalf("only %d crash images for %d operations", checked, ops)
	}
	st := w.Stats()
	if st.Collections == 0 || st.RewrittenBytes == 0 {
		t.Fatalf("the collector never freed a segment or copied a record: %+v", st)
	}
	t.Logf("%d operations, %d crash images reopened; %+v", ops, checked, st)
}
