package harness

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	// firstInterval is the pause after the first poll; each pause doubles
	// up to the caller's ceiling.
	firstInterval = 10 * time.Millisecond
	// EventuallyInterval is Eventually's ceiling between polls: quick
	// enough for a test, slow enough that a condition that runs a command
	// or asks every node does not load the machine.
	EventuallyInterval = 250 * time.Millisecond
)

// ErrNotYet is wrapped by Poll's error when the condition did not hold in
// time.
var ErrNotYet = errors.New("condition not met")

// errPollTimeout is the cause of Poll's own deadline, told apart from the
// caller's context ending.
var errPollTimeout = errors.New("harness: poll timeout")

// Poll calls cond until it returns true (nil) or an error (that error),
// for at most timeout and no longer than ctx. Between calls it pauses
// 10 ms, then twice as long each time up to maxInterval, so a condition
// that holds soon is seen soon and a slow one is not asked hundreds of
// times. The number of calls is bounded too: at most timeout/10ms + 1.
// When time runs out the error wraps ErrNotYet and
// context.DeadlineExceeded (or the cause of ctx's end, when ctx ended
// first). cond receives a context that ends with the wait, to bound
// its own requests.
func Poll(ctx context.Context, timeout, maxInterval time.Duration, cond func(context.Context) (bool, error)) error {
	if timeout <= 0 {
		return fmt.Errorf("harness: Poll needs a positive timeout, got %v", timeout)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errPollTimeout)
	defer cancel()
	maxPolls := int(timeout/firstInterval) + 1
	interval := min(firstInterval, maxInterval)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for polls := 1; ; polls++ {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if polls >= maxPolls {
			return fmt.Errorf("%w after %d polls in %v: %w", ErrNotYet, polls, time.Since(start).Round(time.Millisecond), context.DeadlineExceeded)
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); cause != errPollTimeout {
				return fmt.Errorf("%w after %d polls in %v: %w", ErrNotYet, polls, time.Since(start).Round(time.Millisecond), cause)
			}
			return fmt.Errorf("%w within %v (%d polls): %w", ErrNotYet, timeout, polls, context.DeadlineExceeded)
		case <-timer.C:
		}
		interval = min(2*interval, maxInterval)
	}
}

// TB is the part of testing.TB that Eventually needs; declared here so
// that the commands importing this package do not link package testing.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Eventually polls cond (see Poll; at most EventuallyInterval apart) until
// it holds, and fails tb with a message naming what was awaited when it
// does not within timeout. A wait that needed more than one poll is logged
// with how long it took.
func Eventually(tb TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	start, polls := time.Now(), 0
	err := Poll(context.Background(), timeout, EventuallyInterval, func(context.Context) (bool, error) {
		polls++
		return cond(), nil
	})
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
		return
	}
	if polls > 1 {
		tb.Logf("%s after %v (%d polls)", what, time.Since(start).Round(time.Millisecond), polls)
	}
}
