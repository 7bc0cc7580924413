package replication

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dialkv/dialkv/raftstore/wal"
)

// ErrDiskFull is why a node is not ready while its data filesystem has
// too little room for writes.
var ErrDiskFull = errors.New("replication: disk full")

// diskReserve is the free space below which a node reports not ready.
// Writes need room before the disk is quite full: bbolt grows state.db
// 16 MiB at a time, and the node's log preallocates its segments up to
// 4 MiB at a time. Reporting it early lets a load balancer drain the node
// before its writes start to fail, and the node reports ready again once
// space is freed.
const diskReserve = 64 << 20

// diskWatch checks the room left on the node's data filesystem.
type diskWatch struct {
	// free, when set, replaces the filesystem query (tests).
	free atomic.Pointer[func(dir string) (uint64, error)]
}

// diskReady is nil while the data filesystem has diskReserve bytes
// available to the node, else an ErrDiskFull that says how much is left.
// A filesystem that cannot be asked is not held against the node: the
// writes themselves will say what is wrong.
func (n *Node) diskReady() error {
	free := availableBytes
	if f := n.disk.free.Load(); f != nil {
		free = *f
	}
	avail, err := free(n.cfg.DataDir)
	if err != nil {
		n.log.Debug("cannot read the data filesystem's free space", "dir", n.cfg.DataDir, "err", err)
		return nil
	}
	if avail < diskReserve {
		return fmt.Errorf("%w: %d bytes left on the filesystem of %s, writes need at least %d", ErrDiskFull, avail, n.cfg.DataDir, diskReserve)
	}
	return nil
}

// WALStats returns the counters of the node's write-ahead log, which
// holds every hosted range's Raft log (for metrics).
func (n *Node) WALStats() wal.Stats { return n.store.WALStats() }

// SnapshotPace returns the bytes a second moves' snapshots are paced at
// now on this node, 0 for no bound (for metrics).
func (n *Node) SnapshotPace() int64 { return n.store.SnapshotPace() }
