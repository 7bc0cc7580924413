package main

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// diskCheckEvery is how often the disk guard looks at a run's data.
const diskCheckEvery = 2 * time.Second

// diskError stops a run whose data grew past -max-disk-mib or whose file
// system ran short of -min-free-mib: nodes that write without bound must
// not fill a shared machine's disk.
type diskError struct {
	used, free int64
	top        string
}

func (e *diskError) Error() string {
	return fmt.Sprintf("disk guard: the nodes' data reached %d MiB (%d MiB free on the file system); largest files: %s",
		e.used/mib, e.free/mib, e.top)
}

// fileUsage is one file's allocated size.
type fileUsage struct {
	path  string
	bytes int64
}

// dirUsage returns the bytes allocated to the files under dir and the
// largest n of them.
func dirUsage(dir string, n int) (int64, []fileUsage) {
	var total int64
	var files []fileUsage
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // files come and go while the nodes run
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		size := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			size = st.Blocks * 512
		}
		total += size
		files = append(files, fileUsage{path, size})
		return nil
	})
	slices.SortFunc(files, func(a, b fileUsage) int { return int(min(max(b.bytes-a.bytes, -1), 1)) })
	return total, files[:min(n, len(files))]
}

// freeBytes returns the bytes available to this user on dir's file system
// (-1 if unknown).
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * st.Bsize
}

func describeFiles(dir string, files []fileUsage) string {
	s := make([]string, len(files))
	for i, f := range files {
		rel, err := filepath.Rel(dir, f.path)
		if err != nil {
			rel = f.path
		}
		s[i] = fmt.Sprintf("%s %.1f MiB", rel, float64(f.bytes)/mib)
	}
	return strings.Join(s, ", ")
}

// diskGuard watches dir every diskCheckEvery until stopped or ctx ends,
// records the peak usage, and cancels the run with a *diskError when the
// limits are crossed.
type diskGuard struct {
	dir              string
	maxUsed, minFree int64
	mu               sync.Mutex
	peak             int64
	stop             chan struct{}
	wg               sync.WaitGroup
}

func startDiskGuard(ctx context.Context, cancel context.CancelCauseFunc, dir string, maxUsed, minFree int64) *diskGuard {
	g := &diskGuard{dir: dir, maxUsed: maxUsed, minFree: minFree, stop: make(chan struct{})}
	g.wg.Go(func() {
		t := time.NewTicker(diskCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			used, top := dirUsage(dir, 8)
			free := freeBytes(dir)
			g.mu.Lock()
			g.peak = max(g.peak, used)
			g.mu.Unlock()
			if used > maxUsed || (free >= 0 && free < minFree) {
				cancel(&diskError{used: used, free: free, top: describeFiles(dir, top)})
				return
			}
		}
	})
	return g
}

// Stop ends the watch and returns the peak usage seen.
func (g *diskGuard) Stop() int64 {
	close(g.stop)
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}
