// Package dialkv is kvbench's driver for dialkv, over the project's own Go
// client (github.com/dialkv/dialkv/api/client) and so over gRPC.
package dialkv

import (
	"context"
	"fmt"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"

	"github.com/dialkv/dialkv/bench/workload"
)

// Options configures New.
type Options struct {
	// Endpoints are gRPC host:port addresses of dialkv nodes.
	Endpoints []string
	// MaxStaleness bounds Bounded reads; it is required for them.
	MaxStaleness time.Duration
}

// Driver is one client.Client, which holds one gRPC connection per
// endpoint and sends every request to its current endpoint.
type Driver struct {
	c            *client.Client
	maxStaleness time.Duration
}

var _ workload.Driver = (*Driver)(nil)

// New returns a Driver; it connects lazily.
func New(opts Options) (*Driver, error) {
	c, err := client.New(client.Config{Endpoints: opts.Endpoints})
	if err != nil {
		return nil, err
	}
	return &Driver{c: c, maxStaleness: opts.MaxStaleness}, nil
}

// Put writes val under key.
func (d *Driver) Put(ctx context.Context, key, val []byte) error {
	_, err := d.c.Put(ctx, key, val)
	return err
}

// Get reads key at level.
func (d *Driver) Get(ctx context.Context, key []byte, level workload.Level) error {
	var c kvpb.Consistency
	var opts []client.ReadOption
	switch level {
	case workload.Linearizable:
		c = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	case workload.Stale:
		c = kvpb.Consistency_CONSISTENCY_STALE
	case workload.Session:
		// No token: each read stands alone, as a fresh session's first.
		c = kvpb.Consistency_CONSISTENCY_SESSION
	case workload.Bounded:
		if d.maxStaleness <= 0 {
			return fmt.Errorf("dialkv driver: bounded reads need a positive max staleness")
		}
		c = kvpb.Consistency_CONSISTENCY_BOUNDED
		opts = append(opts, client.WithMaxStaleness(d.maxStaleness))
	default:
		return fmt.Errorf("%w: %q", workload.ErrUnsupportedLevel, level)
	}
	_, err := d.c.Get(ctx, key, append(opts, client.WithConsistency(c))...)
	if client.IsNotFound(err) {
		return workload.ErrNotFound
	}
	return err
}

// Close closes the client's connections.
func (d *Driver) Close() error { return d.c.Close() }
