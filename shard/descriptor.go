package shard

import "github.com/dialkv/dialkv/raftstore"

// Descriptor describes a range; it is stored by raftstore with the range's
// data, so the type lives there.
type Descriptor = raftstore.Descriptor
