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

var _ workload.TxnDriver = (*Driver)(nil)

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

// Txn runs etcd's Txn: If(value of keys[0] is expect, or with expect
// nil its create revision is 0: absent).Then(a put of each
// key).Else(a get of keys[0]).
func (d *Driver) Txn(ctx context.Context, keys [][]byte, expect, val []byte) (bool, []byte, error) {
	first := string(keys[0])
	cmp := clientv3.Compare(clientv3.Value(first), "=", string(expect))
	if expect == nil {
		cmp = clientv3.Compare(clientv3.CreateRevision(first), "=", 0)
	}
	puts := make([]clientv3.Op, len(keys))
	v := string(val)
	for i, k := range keys {
		puts[i] = clientv3.OpPut(string(k), v)
	}
	resp, err := d.c.Txn(ctx).If(cmp).Then(puts...).Else(clientv3.OpGet(first)).Commit()
	if err != nil {
		return false, nil, err
	}
	if resp.Succeeded {
		return true, nil, nil
	}
	if len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil {
		return false, nil, fmt.Errorf("etcd driver: a failed compare answered %d responses, want the get of %q", len(resp.Responses), first)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return false, nil, nil
	}
	// Protobuf decodes an empty value as nil, which would mean "absent".
	return false, append([]byte{}, kvs[0].Value...), nil
}

// Close closes the connection.
func (d *Driver) Close() error { return d.c.Close() }
