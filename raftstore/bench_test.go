package raftstore

// Benchmarks of the state machine's and the Raft log's hot paths (issue #6).
//
//	go test ./raftstore -run XXX -bench . -benchmem
//
// Every benchmark works in b.TempDir() and closes what it opens in
// b.Cleanup. None of them is a Test, so plain `go test` does not run them.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	benchKeyLen   = 16
	benchValueLen = 256
	// benchKeySpace is how many distinct keys the apply benchmarks cycle
	// through: the bbolt bucket stays bounded (~18 MiB) however large b.N.
	benchKeySpace = 1 << 16
	// benchOverlayEntries bounds the overlay in the in-memory apply
	// benchmark: it is flushed, off the clock, once it holds this many
	// entries. In kvd the committer empties it every 100 ms, so it stays
	// small; an overlay grown to millions of entries would measure a
	// B-tree that production never has.
	benchOverlayEntries = 8192
	// benchRangeID is a user range (not the meta range), so every Put pays
	// the range-ownership check as it does in production.
	benchRangeID = 2
)

// benchPuts returns benchKeySpace encoded Put commands, 16-byte random keys
// with 256-byte values, built once per test binary.
var benchPuts = sync.OnceValue(func() [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, benchKeySpace)
	for i := range out {
		key := make([]byte, benchKeyLen)
		val := make([]byte, benchValueLen)
		benchFill(rng, key)
		benchFill(rng, val)
		out[i] = (&Command{Op: OpPut, Key: key, Value: val}).Encode(nil)
	}
	return out
})

func benchFill(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// benchOpenStore opens a Store in a temp dir whose committer only runs when
// the benchmark flushes (or an overlay passes the production CommitBytes,
// which the benchmarks stay under). Logs are discarded.
func benchOpenStore(b *testing.B) *Store {
	b.Helper()
	return benchOpenStoreWith(b, func(*Config) {})
}

// benchOpenStoreWith is benchOpenStore with set changing the config.
func benchOpenStoreWith(b *testing.B, set func(*Config)) *Store {
	b.Helper()
	cfg := DefaultConfig(b.TempDir())
	cfg.CommitInterval = time.Hour
	cfg.Logger = slog.New(slog.DiscardHandler)
	set(&cfg)
	s, err := Open(cfg)
	if err != nil {
		b.Fatalf("open store: %v", err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Errorf("close store: %v", err)
		}
	})
	return s
}

func benchOpenRange(b *testing.B, s *Store) *RangeFSM {
	b.Helper()
	f, err := s.OpenRange(Descriptor{ID: benchRangeID, Generation: 1})
	if err != nil {
		b.Fatalf("open range: %v", err)
	}
	return f
}

// benchApplier feeds a RangeFSM batches of Put entries with increasing
// indexes, cycling through benchPuts. The raft.Log values are reused:
// ApplyBatch copies what it keeps.
type benchApplier struct {
	cmds  [][]byte
	logs  []raft.Log
	batch []*raft.Log
	index uint64
	next  int
}

func newBenchApplier(size int) *benchApplier {
	a := &benchApplier{cmds: benchPuts(), logs: make([]raft.Log, size), batch: make([]*raft.Log, size)}
	for i := range a.logs {
		a.logs[i] = raft.Log{Term: 1, Type: raft.LogCommand}
		a.batch[i] = &a.logs[i]
	}
	return a
}

// fill prepares the next batch.
func (a *benchApplier) fill() []*raft.Log {
	for i := range a.logs {
		a.index++
		a.logs[i].Index = a.index
		a.logs[i].Data = a.cmds[a.next]
		if a.next++; a.next == len(a.cmds) {
			a.next = 0
		}
	}
	return a.batch
}

// bytesPerBatch is the encoded command bytes in one batch.
func (a *benchApplier) bytesPerBatch() int64 { return int64(len(a.logs) * len(a.cmds[0])) }

func benchCheckResults(b *testing.B, out []interface{}) {
	for _, r := range out {
		if res, ok := r.(*Result); !ok || res.Err != nil {
			b.Fatalf("apply result %#v", r)
		}
	}
}

// benchDropOverlay empties the range's overlay without committing it, as
// a commit would (the benchmark never reads the data back). Committing
// instead would spend seconds of wall time off the clock writing bbolt.
func benchDropOverlay(f *RangeFSM) {
	f.mu.Lock()
	f.pending = newOverlay()
	f.mu.Unlock()
}

// BenchmarkRangeFSM_ApplyBatch measures the in-memory apply path: decode,
// ownership check, copy into the overlay's B-tree. One op is one batch of
// Puts; ns/entry divides by the batch size. The overlay is emptied off the
// clock every benchOverlayEntries entries.
func BenchmarkRangeFSM_ApplyBatch(b *testing.B) {
	for _, size := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := benchOpenStore(b)
			f := benchOpenRange(b, s)
			a := newBenchApplier(size)
			b.SetBytes(a.bytesPerBatch())
			b.ReportAllocs()
			pending, ops := 0, 0
			for b.Loop() {
				out := f.ApplyBatch(a.fill())
				if ops++; ops == 1 {
					benchCheckResults(b, out)
				}
				if pending += size; pending >= benchOverlayEntries {
					b.StopTimer()
					benchDropOverlay(f)
					pending = 0
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ops*size), "ns/entry")
		})
	}
}

// BenchmarkRangeFSM_ApplyBatchCommit is ApplyBatch plus the durable
// commit, on the clock: Store.Flush (one bbolt transaction, two fsyncs)
// after every flushEvery batches, as the committer would after that much
// load (16 and 1024 entries per commit; kvd at ~2,600 writes/s commits
// ~260 every 100 ms). Compare with BenchmarkRangeFSM_ApplyBatch for the
// commit's share. There is no batch=512 case: committing random keys
// costs ~10 us per key, so -benchtime 2000x would take over 10 s.
func BenchmarkRangeFSM_ApplyBatchCommit(b *testing.B) {
	const flushEvery = 16
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d/flushEvery=%d", size, flushEvery), func(b *testing.B) {
			s := benchOpenStore(b)
			f := benchOpenRange(b, s)
			a := newBenchApplier(size)
			b.SetBytes(a.bytesPerBatch())
			b.ReportAllocs()
			ops := 0
			for b.Loop() {
				out := f.ApplyBatch(a.fill())
				if ops++; ops == 1 {
					benchCheckResults(b, out)
				}
				if ops%flushEvery == 0 {
					if err := s.Flush(); err != nil {
						b.Fatalf("flush: %v", err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(ops*size), "ns/entry")
			if f.DurableIndex() == 0 && ops >= flushEvery {
				b.Fatalf("nothing was committed")
			}
		})
	}
}

// BenchmarkStore_CommitTrimmingEvents measures state commits once the
// change feed's byte budget is full, so that each commit drops as many
// events as it adds, as on a busy range after its first minutes. The cost
// per event must not grow with the events per commit (it did, before
// commitEvents found the dropped prefix in one pass: 8,000 events per
// commit cost several times what 1,000 did, per event).
func BenchmarkStore_CommitTrimmingEvents(b *testing.B) {
	const batch = 64
	for _, perCommit := range []int{1024, 8192} {
		b.Run(fmt.Sprintf("events=%d", perCommit), func(b *testing.B) {
			// A 1 MiB budget: a few thousand events of a 16-byte key and
			// a 256-byte value, fewer once the keys repeat (after
			// benchKeySpace puts) and events carry previous values.
			s := benchOpenStoreWith(b, func(c *Config) {
				c.EventRetentionBytes, c.EventRetentionAge = 1<<20, 0
			})
			f := benchOpenRange(b, s)
			a := newBenchApplier(batch)
			commit := func() {
				for range perCommit / batch {
					f.ApplyBatch(a.fill())
				}
				if err := s.Flush(); err != nil {
					b.Fatalf("flush: %v", err)
				}
			}
			// Fill the budget, and trim once, before measuring.
			for range 4_000/perCommit + 2 {
				commit()
			}
			floor := f.EventFloor()
			if floor == 0 {
				b.Fatalf("no event trimmed after filling the budget")
			}
			commits := 0
			for b.Loop() {
				commit()
				commits++
			}
			if f.EventFloor() <= floor {
				b.Fatalf("the floor stayed at %d: the measured commits trimmed nothing", floor)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(commits*perCommit), "ns/event")
		})
	}
}

// benchOpenLog opens a range's Raft log exactly as kvd does
// (Store.OpenRaftStorage: a view of the node's WAL, syncing every append).
func benchOpenLog(b *testing.B) raft.LogStore {
	b.Helper()
	s := benchOpenStore(b)
	rs, err := s.OpenRaftStorage(benchRangeID, hclog.NewNullLogger())
	if err != nil {
		b.Fatalf("open raft storage: %v", err)
	}
	b.Cleanup(func() {
		if err := rs.Close(); err != nil {
			b.Errorf("close raft storage: %v", err)
		}
	})
	return rs.Log()
}

// benchLogBatch returns size reusable log entries with 256-byte payloads;
// the log store encodes them, so they can be reused with new indexes.
func benchLogBatch(size int) ([]raft.Log, []*raft.Log) {
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Now()
	logs := make([]raft.Log, size)
	ptrs := make([]*raft.Log, size)
	for i := range logs {
		data := make([]byte, benchValueLen)
		benchFill(rng, data)
		logs[i] = raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: now}
		ptrs[i] = &logs[i]
	}
	return logs, ptrs
}

func benchStoreBatch(b *testing.B, ls raft.LogStore, logs []raft.Log, ptrs []*raft.Log, index *uint64) {
	for i := range logs {
		*index++
		logs[i].Index = *index
	}
	if err := ls.StoreLogs(ptrs); err != nil {
		b.Fatalf("store logs: %v", err)
	}
}

// BenchmarkLogStore_StoreLogs measures a Raft log append: one write and
// one fdatasync per batch, as a follower pays per replicated batch.
func BenchmarkLogStore_StoreLogs(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ls := benchOpenLog(b)
			logs, ptrs := benchLogBatch(size)
			var index uint64
			b.SetBytes(int64(size * benchValueLen))
			b.ReportAllocs()
			for b.Loop() {
				benchStoreBatch(b, ls, logs, ptrs, &index)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(index), "ns/entry")
		})
	}
}

// BenchmarkLogStore_GetLog reads one of the 64 newest entries of a
// 4096-entry log, the read Raft's replication does per entry sent (there is
// no raft.LogCache in front of the log; see shard.New).
func BenchmarkLogStore_GetLog(b *testing.B) {
	ls := benchOpenLog(b)
	logs, ptrs := benchLogBatch(64)
	var index uint64
	for range 4096 / 64 {
		benchStoreBatch(b, ls, logs, ptrs, &index)
	}
	b.SetBytes(benchValueLen)
	b.ReportAllocs()
	var out raft.Log
	i := uint64(0)
	for b.Loop() {
		want := index - i%64
		i++
		if err := ls.GetLog(want, &out); err != nil {
			b.Fatalf("get log %d: %v", want, err)
		}
		if out.Index != want || len(out.Data) != benchValueLen {
			b.Fatalf("get log %d: got index %d, %d bytes", want, out.Index, len(out.Data))
		}
	}
}

func benchPutCommand() Command {
	rng := rand.New(rand.NewPCG(5, 6))
	key := make([]byte, benchKeyLen)
	val := make([]byte, benchValueLen)
	benchFill(rng, key)
	benchFill(rng, val)
	return Command{Op: OpPut, Key: key, Value: val}
}

// BenchmarkCommand_Encode encodes a Put (16-byte key, 256-byte value)
// into a reused buffer: the cost of the format itself. shard's
// BenchmarkProposeEncode measures the encode as Propose does it, into a
// fresh buffer.
func BenchmarkCommand_Encode(b *testing.B) {
	cmd := benchPutCommand()
	buf := cmd.Encode(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = cmd.Encode(buf[:0])
	}
	if _, err := DecodeCommand(buf); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDecodeCommand decodes a Put as ApplyBatch does for every entry.
func BenchmarkDecodeCommand(b *testing.B) {
	cmd := benchPutCommand()
	data := cmd.Encode(nil)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var got Command
	for b.Loop() {
		var err error
		if got, err = DecodeCommand(data); err != nil {
			b.Fatal(err)
		}
	}
	if got.Op != OpPut || len(got.Key) != benchKeyLen || len(got.Value) != benchValueLen {
		b.Fatalf("decoded %+v", got)
	}
}

// BenchmarkRangeFSM_Split splits a range of 100,000 keys (256-byte values)
// in half: the range's applies wait for it, so it bounds how long a split
// stalls the range. (Deleting the moved keys front to back made this
// quadratic: 20 s at 250,000 keys.)
func BenchmarkRangeFSM_Split(b *testing.B) {
	const keys = 100_000
	val := make([]byte, 256)
	spec, err := json.Marshal(SplitSpec{ChildID: 3})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := benchOpenStore(b)
		f := benchOpenRange(b, s)
		var logs []*raft.Log
		for k := 1; k <= keys; k++ {
			logs = append(logs, &raft.Log{Index: uint64(k), Term: 1, Type: raft.LogCommand,
				Data: (&Command{Op: OpPut, Key: []byte(fmt.Sprintf("k%09d", k)), Value: val}).Encode(nil)})
		}
		f.ApplyBatch(logs)
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
		split := &raft.Log{Index: keys + 1, Term: 1, Type: raft.LogCommand,
			Data: (&Command{Op: OpSplit, Key: []byte(fmt.Sprintf("k%09d", keys/2)), Value: spec}).Encode(nil)}
		b.StartTimer()
		out := f.ApplyBatch([]*raft.Log{split})
		b.StopTimer()
		if res := out[0].(*Result); res.Err != nil || res.Child == nil {
			b.Fatalf("split: %+v", res)
		}
		s.Close()
	}
}
