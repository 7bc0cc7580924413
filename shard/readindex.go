package shard

import (
	"context"
	"sync"
	"time"
)

// readBatcher shares one leadership confirmation among concurrent
// linearizable reads. A reader joins the next round to start after it
// arrived, so the commit index that round notes already covers every write
// acknowledged before the read began.
type readBatcher struct {
	s       *Shard
	mu      sync.Mutex
	waiting []chan readResult
	running bool
}

type readResult struct {
	index uint64
	err   error
}

// maxRoundTime bounds one confirmation round, whatever the readers'
// deadlines: a round that cannot reach a quorum fails every reader in it.
const maxRoundTime = 5 * time.Second

func (b *readBatcher) wait(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-ch:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *readBatcher) run() {
	for {
		b.mu.Lock()
		batch := b.waiting
		b.waiting = nil
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), maxRoundTime)
		idx, err := b.s.confirmRead(ctx)
		cancel()
		for _, ch := range batch {
			ch <- readResult{index: idx, err: err}
		}
	}
}
