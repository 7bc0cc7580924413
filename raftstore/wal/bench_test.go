package wal_test

// Group commit, measured: N ranges appending at once, one 256-byte entry
// per batch, each append waiting for its sync (as a follower's does),
// on one shared WAL against N separate SegmentLogs (one file and one
// fdatasync per range, as today).
//
//	go test ./raftstore/wal -run XXX -bench Concurrent -benchtime 3s
//
// appends/s is the node's total; fsyncs/append is how many syncs each
// append paid for.

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// appender is one range's log, as the benchmark drives it.
type appender interface {
	StoreLogs([]*raft.Log) error
}

// runAppenders has n goroutines append total entries between them, one
// per batch, and returns how long that took.
func runAppenders(b *testing.B, logs []appender, total int) time.Duration {
	b.Helper()
	per := max(1, total/len(logs))
	data := make([]byte, 256)
	start := time.Now()
	var wg sync.WaitGroup
	for _, l := range logs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
			batch := []*raft.Log{e}
			for i := 1; i <= per; i++ {
				e.Index = uint64(i)
				e.AppendedAt = time.Now()
				if err := l.StoreLogs(batch); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

func report(b *testing.B, appends int, elapsed time.Duration, syncs uint64) {
	b.ReportMetric(float64(appends)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(float64(syncs)/float64(appends), "fsyncs/append")
	b.ReportMetric(0, "ns/op") // one op is the whole run: not meaningful
}

func BenchmarkWAL_ConcurrentRanges(b *testing.B) {
	for _, n := range []int{1, 16, 100} {
		b.Run(fmt.Sprintf("ranges=%d", n), func(b *testing.B) {
			w, err := wal.Open(b.TempDir(), wal.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			logs := make([]appender, n)
			for i := range logs {
				logs[i] = w.Range(uint64(i + 1))
			}
			before := w.Stats()
			total := max(b.N, n) * 50
			elapsed := runAppenders(b, logs, total)
			appends := total / n * n
			report(b, appends, elapsed, w.Stats().Syncs-before.Syncs)
		})
	}
}

func BenchmarkSegmentLog_ConcurrentRanges(b *testing.B) {
	for _, n := range []int{1, 16, 100} {
		b.Run(fmt.Sprintf("ranges=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			var syncs atomic.Uint64
			logs := make([]appender, n)
			for i := range logs {
				l, err := raftstore.OpenSegmentLog(filepath.Join(dir, fmt.Sprint(i)))
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				l.SetSyncFunc(func(f *os.File) error {
					syncs.Add(1)
					return unix.Fdatasync(int(f.Fd()))
				})
				logs[i] = l
			}
			total := max(b.N, n) * 50
			elapsed := runAppenders(b, logs, total)
			report(b, total/n*n, elapsed, syncs.Load())
		})
	}
}
