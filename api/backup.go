package api

import (
	"context"
	"errors"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
)

// BackupRange is Cluster.BackupRange: one range's keys at one applied
// index of one replica (kvctl backup save). Like a watch it is a stream,
// so it takes no default deadline: a large range takes as long as it
// takes, bounded by the client's context. It needs the backup verb (the
// root role with auth on): a backup reads every key.
func (s *Service) BackupRange(req *kvpb.BackupRangeRequest, stream kvpb.Cluster_BackupRangeServer) error {
	ctx := stream.Context()
	var err error
	switch {
	case req.RangeId == 0:
		err = invalid("backup range needs a range id")
	default:
		err = s.authorizeAdmin(ctx, auth.VerbBackup)
	}
	if err == nil {
		err = s.b.BackupRange(ctx, req, stream.Send)
	}
	err = classify(err, opRead, err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded))
	s.metrics.observeStream("BackupRange", err)
	return err
}
