package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// hashicorp/raft v1.8.0 never answers the futures of committed entries
// still queued for the FSM when it shuts down. Found by a kvd that hung on
// SIGTERM: its new leader's term marker was such an entry. Here the
// leader's FSM is held on its first entry while later ones commit one by
// one and queue behind it; the shard then shuts down. Shutdown must return,
// and so must every Propose, those Raft dropped included.
func TestShutdown_DoesNotWaitForFuturesRaftDrops(t *testing.T) {
	nodes := startGroup(t, 3, groupOptions{parallelAppend: true})
	leader := waitReadyLeader(t, nodes)
	r := leader.shard.Raft()

	// With parallel appends the FSM waits for the leader's fsync, so
	// holding that fsync holds the FSM while entries still commit.
	var once sync.Once
	entered, release := make(chan struct{}), make(chan struct{})
	leader.shard.storage.Log().SetSyncFunc(func(sync func() error) error {
		once.Do(func() { close(entered); <-release })
		return sync()
	})
	var releaseOnce sync.Once
	releaseFn := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseFn()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const proposals = 12
	results := make(chan error, proposals)
	for i := range proposals {
		last := r.LastIndex()
		go func() {
			cmd := &raftstore.Command{Op: raftstore.OpPut, Key: fmt.Appendf(nil, "k%02d", i), Value: []byte("v")}
			_, err := leader.shard.Propose(ctx, cmd)
			results <- err
		}()
		// One commit at a time, so that each reaches the FSM's queue as a
		// batch of its own.
		for attempt := 0; r.LastIndex() <= last || r.CommitIndex() < r.LastIndex(); attempt++ {
			if attempt == 2000 {
				t.Fatalf("proposal %d did not commit: last index %d, commit index %d", i, r.LastIndex(), r.CommitIndex())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the leader never synced")
	}

	shut := make(chan error, 1)
	go func() { shut <- leader.shard.Shutdown() }()
	// Release the FSM only once Raft is shutting down, so that it returns
	// to a queue of batches and a closed shutdown channel at once.
	for attempt := 0; r.State() != raft.Shutdown; attempt++ {
		if attempt == 2000 {
			t.Fatal("Raft did not begin to shut down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	releaseFn()
	select {
	case <-shut:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return within 10s")
	}
	var applied, dropped int
	for range proposals {
		select {
		case err := <-results:
			switch {
			case err == nil:
				applied++
			case errors.Is(err, ErrIndeterminate):
				dropped++
			default:
				t.Errorf("a proposal pending at shutdown failed with %v, want success or %v", err, ErrIndeterminate)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a proposal pending at shutdown had not returned 5s after it (%d applied, %d indeterminate so far)", applied, dropped)
		}
	}
	t.Logf("%d proposals applied, %d answered indeterminate at shutdown", applied, dropped)
}

// blockedFuture is a raft.Future answered only when answer is sent to or
// closed. returned closes when Error has returned, so that a test can
// wait for awaitFuture's waiter on it to end.
type blockedFuture struct {
	answer   chan error
	returned chan struct{}
}

func (f blockedFuture) Error() error {
	defer close(f.returned)
	return <-f.answer
}

func TestAwaitFuture(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		// act answers the future, closes stop or cancels ctx (or several).
		act  func(answer chan error, stop chan struct{}, cancel context.CancelFunc)
		want error
	}{
		{"answered", func(a chan error, _ chan struct{}, _ context.CancelFunc) { a <- nil }, nil},
		{"answered with an error", func(a chan error, _ chan struct{}, _ context.CancelFunc) { a <- boom }, boom},
		{"never answered, instance stops", func(_ chan error, s chan struct{}, _ context.CancelFunc) { close(s) }, errAbandoned},
		{"never answered, caller gives up", func(_ chan error, _ chan struct{}, c context.CancelFunc) { c() }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := blockedFuture{answer: make(chan error, 1), returned: make(chan struct{})}
			// awaitFuture leaves its waiter on a future it gave up on (by
			// design: Raft may never answer it). This one is the test's, so
			// answer it at the end and see the waiter go.
			t.Cleanup(func() {
				close(f.answer)
				select {
				case <-f.returned:
				case <-time.After(5 * time.Second):
					t.Error("awaitFuture's waiter did not return once the future was answered")
				}
			})
			stop := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tt.act(f.answer, stop, cancel)
			done := make(chan error, 1)
			go func() { done <- awaitFuture(ctx, stop, f) }()
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) {
					t.Fatalf("awaitFuture = %v, want %v", err, tt.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("awaitFuture did not return")
			}
		})
	}
}
