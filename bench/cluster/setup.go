package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// startAttempts bounds StartRetrying's starts.
const startAttempts = 3

// Binary returns path, or when path is "" the binary called name next to
// the running one (`make build` and `make bench-build` put them all in
// bin/). Either must exist; hint, in the error, says how to get it.
func Binary(path, name, hint string) (string, error) {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("%s binary: %w", name, err)
		}
		path = filepath.Join(filepath.Dir(self), name)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s binary: %w (%s)", name, err, hint)
	}
	return path, nil
}

// StartRetrying starts a cluster with start (StartDialkv or StartEtcd)
// under dir/start-1 and returns it with the directory it runs in. With
// automatic ports (o.PortBase 0) another process may bind a port between
// its choice and a member's binding it, so a failed start is retried,
// each attempt in a new directory so that a failure's logs stay; log
// names each failure. A given port base fails at once, as does a start
// whose ctx ended.
func StartRetrying(ctx context.Context, start func(context.Context, Options) (*Cluster, error), o Options, dir string, log io.Writer) (*Cluster, string, error) {
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		o.Dir = filepath.Join(dir, fmt.Sprintf("start-%d", attempt))
		c, err := start(ctx, o)
		if err == nil {
			return c, o.Dir, nil
		}
		lastErr = err
		if ctx.Err() != nil || o.PortBase != 0 {
			break
		}
		fmt.Fprintf(log, "start attempt %d failed: %v\n", attempt, err)
	}
	return nil, "", fmt.Errorf("start the cluster: %w", lastErr)
}
