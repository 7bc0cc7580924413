package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/kvpb"
)

// BackupRange streams range id's backup (Cluster.BackupRange), passing
// every chunk to fn. It is retried like a read; a retry starts the range
// over, with a first chunk that has Range set again, so fn must begin the
// range afresh on each such chunk. An error from fn ends it at once.
func (c *Client) BackupRange(ctx context.Context, id uint64, fn func(*kvpb.BackupRangeChunk) error) error {
	req := &kvpb.BackupRangeRequest{RangeId: id}
	var fnErr error
	err := c.invoke(ctx, "backup range", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cluster(cc).BackupRange(ctx, req, opts...)
		if err != nil {
			return err
		}
		last := false
		for range 1 << 40 { // ends with the stream
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				if !last {
					return fmt.Errorf("backup of range %d ended before its last chunk", id)
				}
				return nil
			}
			if err != nil {
				return err
			}
			if fnErr = fn(m); fnErr != nil {
				return fnErr
			}
			last = m.Last
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}
