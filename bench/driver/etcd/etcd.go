// Package etcd is kvbench's driver for etcd, over its official Go client
// (go.etcd.io/etcd/client/v3).
package etcd

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dialkv/dialkv/bench/workload"
)

// DialTimeout bounds New's wait for a first connection.
const DialTimeout = 5 * time.Second

// Driver is one clientv3.Client: one gRPC connection that balances
// requests over the endpoints round-robin.
type Driver struct {
	c *clientv3.Client
}

var _ workload.Driver = (*Driver)(nil)

// New connects to endpoints (host:port, plain HTTP).
func New(endpoints []string) (*Driver, error) {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: DialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	return &Driver{c: c}, nil
}

// Put writes val under key.
func (d *Driver) Put(ctx context.Context, key, val []byte) error {
	_, err := d.c.Put(ctx, string(key), string(val))
	return err
}

// Get reads key: Linearizable is etcd's default read ("l"), Stale its
// serializable one ("s"). etcd has no bounded or session level.
func (d *Driver) Get(ctx context.Context, key []byte, level workload.Level) error {
	var opts []clientv3.OpOption
	switch level {
	case workload.Linearizable:
	case workload.Stale:
		opts = append(opts, clientv3.WithSerializable())
	default:
		return fmt.Errorf("%w: etcd has no %q reads", workload.ErrUnsupportedLevel, level)
	}
	resp, err := d.c.Get(ctx, string(key), opts...)
	if err != nil {
		return err
	}
	if resp.Count == 0 {
		return workload.ErrNotFound
	}
	return nil
}

// Close closes the connection.
func (d *Driver) Close() error { return d.c.Close() }
