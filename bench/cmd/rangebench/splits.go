package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"

	"github.com/dialkv/dialkv/bench/workload"
)

// Keys of the benchmark are workload keys (keyPrefix plus a zero-padded
// 10-digit index) over [0, keySpace): the write phase picks them uniformly,
// and the splits cut that space into N ranges of keySpace/N indexes each.
const (
	keyPrefix = "k"
	keySpace  = 1_000_000
)

// Retries of one split, and the bound of one attempt.
const (
	splitAttempts       = 10
	splitAttemptTimeout = 30 * time.Second
	splitBackoffMax     = 2 * time.Second
)

// rangeStep is the number of key indexes per range for n ranges.
func rangeStep(n int) int { return keySpace / n }

// splitKeys returns the n-1 split keys, ascending, that cut the key space
// into n ranges: the keys of indexes step, 2*step, ..., (n-1)*step.
func splitKeys(n int) [][]byte {
	step := rangeStep(n)
	keys := make([][]byte, 0, max(n-1, 0))
	for i := 1; i < n; i++ {
		keys = append(keys, workload.AppendKey(nil, keyPrefix, i*step))
	}
	return keys
}

// splitPlan orders the splits so that most of them run in parallel and
// none waits for a range born a moment ago to elect a leader.
//
// A split is one Raft command on the range that holds the key, so splits of
// different ranges proceed in parallel, but two splits of one range must
// not be in flight at once: if the higher key's split applied second, its
// key would no longer be in that range. Splitting one range at keys taken
// in descending order always hits that same range (its start stays, its end
// moves down), whose leader is settled. So: first split the initial range
// at the first key of each group (coarse, descending, one at a time); wait
// until those ranges have leaders; then one worker per group splits the
// range its group lies in at the group's other keys, descending.
type splitPlan struct {
	Coarse [][]byte   // descending
	Groups [][][]byte // each descending; all groups may run at once
}

func planSplits(keys [][]byte, workers int) splitPlan {
	var p splitPlan
	if len(keys) == 0 {
		return p
	}
	groups := min(max(workers, 1), len(keys))
	for g := range groups {
		lo, hi := g*len(keys)/groups, (g+1)*len(keys)/groups
		var rest [][]byte
		if g == 0 {
			rest = slices.Clone(keys[lo:hi]) // lies in the initial range, which starts at ""
		} else {
			p.Coarse = append(p.Coarse, keys[lo])
			rest = slices.Clone(keys[lo+1 : hi])
		}
		slices.Reverse(rest)
		if len(rest) > 0 {
			p.Groups = append(p.Groups, rest)
		}
	}
	slices.Reverse(p.Coarse)
	return p
}

// splitStats says how creating the ranges went.
type splitStats struct {
	Splits  int
	Retries int64
	Elapsed time.Duration
}

// splitter runs a plan through one client.
type splitter struct {
	cli      *client.Client
	log      io.Writer
	total    int
	done     atomic.Int64
	retries  atomic.Int64
	began    time.Time
	progress time.Duration
	mu       sync.Mutex
	lastNote time.Time
}

// createRanges splits the single user range of a fresh cluster into n
// ranges. waitLed is called between the coarse splits and the parallel
// ones with the number of ranges that must then have a leader.
func createRanges(ctx context.Context, cli *client.Client, n, workers int, log io.Writer,
	waitLed func(ctx context.Context, ranges int) error) (splitStats, error) {
	keys := splitKeys(n)
	plan := planSplits(keys, workers)
	s := &splitter{cli: cli, log: log, total: len(keys), began: time.Now(), progress: 5 * time.Second}
	s.lastNote = s.began
	stats := func() splitStats {
		return splitStats{Splits: int(s.done.Load()), Retries: s.retries.Load(), Elapsed: time.Since(s.began)}
	}
	for _, k := range plan.Coarse {
		if err := s.split(ctx, k); err != nil {
			return stats(), err
		}
	}
	if len(plan.Coarse) > 0 {
		if err := waitLed(ctx, len(plan.Coarse)+1); err != nil {
			return stats(), fmt.Errorf("after the %d coarse splits: %w", len(plan.Coarse), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(plan.Groups))
	var wg sync.WaitGroup
	for i, g := range plan.Groups {
		wg.Go(func() {
			for _, k := range g {
				if err := s.split(ctx, k); err != nil {
					errs[i] = err
					cancel() // the other groups stop too
					return
				}
			}
		})
	}
	wg.Wait()
	// The first error that is not just the cancellation it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return stats(), err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return stats(), err
	}
	return stats(), nil
}

// split splits the range holding key at key, retrying what the client does
// not retry itself (it retries a split only when it was provably not
// applied). After a failed attempt whose outcome is unknown, "key already
// starts a range" (InvalidArgument) means that attempt applied.
func (s *splitter) split(ctx context.Context, key []byte) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, splitAttemptTimeout)
		_, err := s.cli.SplitRange(actx, key)
		cancel()
		if err == nil || (attempt > 1 && client.IsInvalid(err)) {
			s.note()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt >= splitAttempts || client.IsInvalid(err) {
			return fmt.Errorf("split at %q, attempt %d: %w", key, attempt, err)
		}
		s.retries.Add(1)
		delay := min(100*time.Millisecond<<attempt, splitBackoffMax)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// note counts a split and prints progress now and then.
func (s *splitter) note() {
	done := s.done.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.lastNote) >= s.progress || int(done) == s.total {
		s.lastNote = now
		el := now.Sub(s.began).Seconds()
		fmt.Fprintf(s.log, "  splits %d/%d in %.1fs (%.1f/s, %d retries)\n", done, s.total, el, float64(done)/el, s.retries.Load())
	}
}

// checkRanges verifies the routing table: exactly the n ranges of
// splitKeys(n), in order.
func checkRanges(rs []*kvpb.RangeDescriptor, n int) error {
	keys := splitKeys(n)
	if len(rs) != n {
		return fmt.Errorf("routing table has %d user ranges, want %d", len(rs), n)
	}
	for i, r := range rs {
		var start []byte
		if i > 0 {
			start = keys[i-1]
		}
		if !bytes.Equal(r.Start, start) {
			return fmt.Errorf("range %d (id %d) starts at %q, want %q", i, r.Id, r.Start, start)
		}
	}
	return nil
}
