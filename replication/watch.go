package replication

import (
	"context"
	"errors"

	"github.com/dialkv/dialkv/api/kvpb"
)

// Watch streams the committed writes to req's span, calling send for each
// message, until ctx ends or an error (ErrCompacted, ErrKeyOutOfRange...).
// The first message is a progress message carrying the starting cursor.
// send is never called concurrently.
func (n *Node) Watch(ctx context.Context, req *kvpb.WatchRequest, send func(*kvpb.WatchResponse) error) error {
	return errors.New("replication: watch not implemented yet")
}

// WatchRange streams one range's events after req.After from this node's
// replica (Internal.WatchRange).
func (n *Node) WatchRange(ctx context.Context, req *kvpb.WatchRangeRequest, send func(*kvpb.WatchRangeResponse) error) error {
	return errors.New("replication: watch not implemented yet")
}
