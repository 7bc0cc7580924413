package jepsen

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Reproductions of server bugs the suite found. A reproduction of a bug
// not reproduced or not fixed yet lives in a file built only with the
// repro tag (repro_open_test.go), so that no run passes by skipping it:
//
//	go test -tags repro -count=1 -run TestRepro -v ./jepsen-style-tests/
//
// Once the bug is fixed it moves here and runs always, as a regression
// test. testdata/ keeps the histories and logs of the runs that found the
// bugs.

// TestRepro_RestartAfterLogSuffixTruncation: a node whose Raft log had a
// conflicting suffix truncated (a deposed leader's uncommitted entries)
// must start again after kill -9. With raft-wal v0.4.0 it could not:
// hashicorp/raft panicked in NewRaft with "sealed segment has no index
// block" (truncateTail marked the tail segment sealed without writing its
// index block, hashicorp/raft-wal issue #31; raft reads every entry after
// the last snapshot on start). Fixed by moving the log to raft-boltdb
// (3c40bb0); now a regression test.
//
// Steps: a writer keeps sending puts to the leader L; L is isolated, so its
// last entries are appended but never committed; the majority elects a new
// leader and commits other entries at the same indexes; the partition
// heals and L, now a follower, logs "clearing log suffix"; then L is
// killed with SIGKILL and restarted.
func TestRepro_RestartAfterLogSuffixTruncation(t *testing.T) {
	c, nt := startProxiedCluster(t)
	var err error
	put := func(i int, key string, timeout time.Duration) int {
		ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
		defer cancel()
		r, err := httpDo(ctx, c, http.MethodPut, kvURL(c, i, key, "timeout="+timeout.String()), []byte("v"))
		if err != nil {
			return 0
		}
		return r.code
	}
	var leader int
	truncated := false
	for attempt := 1; attempt <= 3 && !truncated; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		leader, err = c.Leader(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for k := range 50 {
			put(leader, fmt.Sprintf("warm/%d/%d", attempt, k), time.Second)
		}
		// Keep L busy with writes that will never commit.
		var stop atomic.Bool
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for k := 0; !stop.Load(); k++ {
					put(leader, fmt.Sprintf("orphan/%d/%d/%d", attempt, w, k), 300*time.Millisecond)
				}
			})
		}
		time.Sleep(100 * time.Millisecond)
		var pairs [][2]int
		for j := range 3 {
			if j != leader {
				pairs = append(pairs, [2]int{leader, j}, [2]int{j, leader})
			}
		}
		nt.Set(Link{Drop: true}, pairs...)
		t.Logf("attempt %d: isolated leader %s", attempt, c.ID(leader))
		time.Sleep(time.Second)
		stop.Store(true)
		wg.Wait()
		// The majority commits other entries at the same indexes.
		other := (leader + 1) % 3
		acked := 0
		for k := range 100 {
			if put(other, fmt.Sprintf("majority/%d/%d", attempt, k), time.Second) == http.StatusOK {
				acked++
			}
		}
		t.Logf("attempt %d: majority acknowledged %d writes", attempt, acked)
		nt.Heal()
		for poll := 0; poll < 50 && !truncated; poll++ {
			time.Sleep(100 * time.Millisecond)
			tail, _ := c.LogTail(leader, 500)
			truncated = strings.Contains(tail, "clearing log suffix")
		}
	}
	if !truncated {
		t.Skip("could not make the deposed leader truncate its log suffix in 3 attempts")
	}
	tail, _ := c.LogTail(leader, 500)
	for _, l := range strings.Split(tail, "\n") {
		if strings.Contains(l, "clearing log suffix") {
			t.Logf("%s: %s", c.ID(leader), l)
		}
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, leader); err != nil {
		t.Errorf("%s does not come back after kill -9 following a log suffix truncation: %v", c.ID(leader), err)
	}
}

// startProxiedCluster starts 3 nodes whose links go through fault
// proxies, stopped (their logs dumped on failure) when the test ends.
func startProxiedCluster(t *testing.T) (*Cluster, *Net) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	nt := NewNet(3, t.Logf)
	t.Cleanup(func() { nt.Close() })
	c, err := Start(context.Background(), Options{KvdPath: kvdBin, Dir: t.TempDir(), Nodes: 3, PeerAddr: nt.PeerAddr, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 40)
		}
		c.Close()
	})
	return c, nt
}
