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

var _ workload.TxnDriver = (*Driver)(nil)

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

// Txn runs KV.Txn: one Raft entry when keys share a range, two-phase
// commit across ranges otherwise.
func (d *Driver) Txn(ctx context.Context, keys [][]byte, expect, val []byte) (bool, []byte, error) {
	cmp := &kvpb.Compare{Key: keys[0], Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_EQUAL, Value: expect}
	if expect == nil {
		cmp = &kvpb.Compare{Key: keys[0], Target: kvpb.Compare_TARGET_EXISTS, Result: kvpb.Compare_RESULT_EQUAL, Exists: false}
	}
	puts := make([]*kvpb.TxnOp, len(keys))
	for i, k := range keys {
		puts[i] = &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: k, Value: val}}}
	}
	resp, err := d.c.Txn(ctx, &kvpb.TxnRequest{
		Compares: []*kvpb.Compare{cmp},
		Success:  puts,
		Failure:  []*kvpb.TxnOp{{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: keys[0]}}}},
	})
	if err != nil {
		return false, nil, err
	}
	if resp.GetSucceeded() {
		return true, nil, nil
	}
	if rs := resp.GetResults(); len(rs) != 1 || rs[0].GetGet() == nil {
		return false, nil, fmt.Errorf("dialkv driver: a failed compare answered %d results, want the get of %q", len(rs), keys[0])
	}
	kv := resp.GetResults()[0].GetGet().GetKv()
	if kv == nil {
		return false, nil, nil
	}
	// Protobuf decodes an empty value as nil, which would mean "absent".
	return false, append([]byte{}, kv.GetValue()...), nil
}

// Close closes the client's connections.
func (d *Driver) Close() error { return d.c.Close() }
