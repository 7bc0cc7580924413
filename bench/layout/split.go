package layout

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"

	"github.com/dialkv/dialkv/bench/workload"
)

// Retries of one split, and the bound of one attempt.
const (
	splitAttempts       = 10
	splitAttemptTimeout = 30 * time.Second
	splitBackoffMax     = 2 * time.Second
)

// SplitKeys returns the n-1 keys, ascending, that cut the workload key
// space of keys indexes under prefix (workload.AppendKey) into n ranges
// of equal index counts: the keys of indexes i*keys/n for i = 1..n-1. The
// first range also holds every key below the key space, the last every key
// above it.
func SplitKeys(prefix string, keys, n int) ([][]byte, error) {
	if n < 1 || keys < n {
		return nil, fmt.Errorf("layout: %d ranges of a %d-key space: want 1 <= ranges <= keys", n, keys)
	}
	out := make([][]byte, 0, n-1)
	for i := 1; i < n; i++ {
		out = append(out, workload.AppendKey(nil, prefix, i*keys/n))
	}
	return out, nil
}

// Split splits the cluster's ranges at keys, one split at a time, and
// returns how many splits it made. A key that already starts a range is
// skipped. Keys are taken in descending order: each split then cuts the
// range that has held the key longest (a split keeps the old range as its
// left half), whose leader is settled, rather than one born a moment ago
// that may still be electing. Every split is retried on failures whose
// outcome the client leaves open; after such a failure, "the key already
// starts a range" means the earlier attempt applied.
func Split(ctx context.Context, cli *client.Client, keys [][]byte, log io.Writer) (int, error) {
	rs, err := cli.Ranges(ctx)
	if err != nil {
		return 0, fmt.Errorf("layout: ranges: %w", err)
	}
	var todo [][]byte
	for _, k := range keys {
		starts := slices.ContainsFunc(rs.Ranges, func(r *kvpb.RangeDescriptor) bool { return bytes.Equal(r.Start, k) })
		if !starts && !slices.ContainsFunc(todo, func(t []byte) bool { return bytes.Equal(t, k) }) {
			todo = append(todo, k)
		}
	}
	slices.SortFunc(todo, func(a, b []byte) int { return bytes.Compare(b, a) })
	began := time.Now()
	for i, k := range todo {
		if err := splitOne(ctx, cli, k); err != nil {
			return i, err
		}
		if log != nil && (i+1)%8 == 0 {
			fmt.Fprintf(log, "  splits %d/%d in %.1fs\n", i+1, len(todo), time.Since(began).Seconds())
		}
	}
	return len(todo), nil
}

func splitOne(ctx context.Context, cli *client.Client, key []byte) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, splitAttemptTimeout)
		_, err := cli.SplitRange(actx, key)
		cancel()
		if err == nil || (attempt > 1 && client.IsInvalid(err)) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("layout: split at %q: %w", key, ctx.Err())
		}
		if attempt >= splitAttempts || client.IsInvalid(err) {
			return fmt.Errorf("layout: split at %q, attempt %d: %w", key, attempt, err)
		}
		if err := sleep(ctx, min(100*time.Millisecond<<attempt, splitBackoffMax)); err != nil {
			return fmt.Errorf("layout: split at %q: %w", key, err)
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
