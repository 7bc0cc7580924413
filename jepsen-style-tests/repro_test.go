package jepsen

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Reproductions of server bugs the suite found. They fail while the bug
// is there, so they run only with DIALKV_REPRO=1:
//
//	DIALKV_REPRO=1 go test -count=1 -run TestRepro -v ./jepsen-style-tests/

func reproOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("DIALKV_REPRO") == "" {
		t.Skip("reproduction of a known server bug; set DIALKV_REPRO=1 to run it")
	}
}

// TestRepro_RestartAfterLogSuffixTruncation: a node whose Raft log had a
// conflicting suffix truncated (a deposed leader's uncommitted entries)
// cannot start again after kill -9: hashicorp/raft panics in NewRaft with
// "sealed segment has no index block". raft-wal v0.4.0's truncateTail marks
// the tail segment sealed in its meta store without writing the segment's
// index block (hashicorp/raft-wal issue #31), and raft reads every entry
// after the last snapshot on start.
//
// Steps: a writer keeps sending puts to the leader L; L is isolated, so its
// last entries are appended but never committed; the majority elects a new
// leader and commits other entries at the same indexes; the partition
// heals and L, now a follower, logs "clearing log suffix"; then L is
// killed with SIGKILL and restarted.
func TestRepro_RestartAfterLogSuffixTruncation(t *testing.T) {
	reproOnly(t)
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
			c.DumpLogs(t, 30)
		}
		c.Close()
	})
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

// TestRepro_RecreatedReplicaServesEmptyState: when the placement driver
// removes a replica from an unreachable node and adds it back once the node
// returns, the node drops its old replica and creates a new, empty one that
// serves stale reads before it has received its snapshot: every key is
// absent, at applied index 0, although the same node served the key at a
// high applied index a moment before. A stale reader sees the node's state
// go backwards (the per-replica monotonic promise), with no restart.
//
// Steps: write a key; pause a follower F of the user range for 4s (the
// driver removes F's replica after about 2s and the others keep
// committing); resume F and read the key from F at the stale level in a
// tight loop: a read finding the key absent, or at a lower applied index
// than before the pause, reproduces the bug.
func TestRepro_RecreatedReplicaServesEmptyState(t *testing.T) {
	reproOnly(t)
	c := startCluster(t, 3)
	cs, err := DialCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	stale := func(i int) Op {
		return cs.Do(Request{Node: i, API: APIGRPC, F: OpGet, Key: "repro/k", Level: Stale, Timeout: time.Second})
	}
	for attempt := 1; attempt <= 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		leader, err := c.Leader(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		f := (leader + 1) % 3
		if code := func() int {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, _ := httpDo(ctx, c, http.MethodPut, kvURL(c, leader, "repro/k", ""), []byte(fmt.Sprint("v", attempt)))
			return r.code
		}(); code != http.StatusOK {
			t.Fatalf("put: %d", code)
		}
		time.Sleep(200 * time.Millisecond)
		before := stale(f)
		if before.Type != OK || before.Missing {
			t.Fatalf("stale read on %s before the pause: %s", c.ID(f), before.String())
		}
		if err := c.Pause(f); err != nil {
			t.Fatal(err)
		}
		for k := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			httpDo(ctx, c, http.MethodPut, kvURL(c, leader, fmt.Sprintf("repro/filler/%d", k), ""), []byte("x"))
			cancel()
			time.Sleep(200 * time.Millisecond)
		}
		if err := c.Resume(f); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			op := stale(f)
			if op.Type == OK && op.ServedBy == c.ID(f) && (op.Missing || op.AppliedIndex < before.AppliedIndex) {
				tail, _ := c.LogTail(f, 400)
				var moves []string
				for _, l := range strings.Split(tail, "\n") {
					if strings.Contains(l, "dropped replica") || strings.Contains(l, "initial configuration") || strings.Contains(l, "Installed remote snapshot") {
						moves = append(moves, l)
					}
				}
				t.Errorf("attempt %d: %s went backwards without a restart:\n  before the pause: %s\n  after the resume: %s\n%s",
					attempt, c.ID(f), before.String(), op.String(), strings.Join(moves, "\n"))
				return
			}
		}
		t.Logf("attempt %d: no backwards read on %s", attempt, c.ID(f))
	}
}
