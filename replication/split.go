package replication

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/protobuf/proto"
)

// split splits s (whose leader this node is) at key: allocate the new
// range's id in the meta range, commit the split through s's log (every
// replica then moves the keys and starts the new range's replica, see
// onSplit), and publish both descriptors.
func (n *Node) split(ctx context.Context, s *shard.Shard, key []byte) (*kvpb.SplitRangeResponse, error) {
	desc := s.Descriptor()
	if !desc.Contains(key) || bytes.Equal(key, desc.Start) {
		return nil, fmt.Errorf("%w: %q is not strictly inside range %d [%q, %q)", ErrBadSplitKey, key, desc.ID, desc.Start, desc.End)
	}
	childID, err := n.allocRangeID(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.ProposeSplit(ctx, key, childID)
	if err != nil {
		return nil, err
	}
	left, right := descToProto(res.Parent), descToProto(res.Child)
	left.Leader = n.cfg.NodeID
	for _, d := range []*kvpb.RangeDescriptor{left, right} {
		body, _ := proto.Marshal(d)
		n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: metaKeyID(metaRangePrefix, d.Id), Value: append(version(d.Generation, 0), body...)})
	}
	n.routes.invalidate()
	n.log.Info("split range", "range", desc.ID, "at", fmt.Sprintf("%q", key), "new_range", childID)
	return &kvpb.SplitRangeResponse{Left: left, Right: right}, nil
}

func descToProto(d *raftstore.Descriptor) *kvpb.RangeDescriptor {
	return &kvpb.RangeDescriptor{Id: d.ID, Start: d.Start, End: d.End, Generation: d.Generation, Replicas: d.Replicas}
}

// splitCheckInterval is how often a leader checks its ranges' sizes.
const splitCheckInterval = 2 * time.Second

// maybeSplit splits a range this node leads once it outgrows
// RangeMaxBytes, at the key that halves its bytes.
func (n *Node) maybeSplit(ctx context.Context, s *shard.Shard) {
	if d := s.Descriptor(); d.IsMeta() || !s.IsLeader() {
		return
	}
	size := s.FSM().ApproxSize()
	if size < n.cfg.RangeMaxBytes {
		return
	}
	key, err := s.FSM().SplitKey()
	if err != nil || key == nil {
		return
	}
	if _, err := n.split(ctx, s, key); err != nil {
		n.log.Warn("automatic split failed", "range", s.ID(), "size", size, "err", err)
	}
}
