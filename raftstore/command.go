package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Op is the kind of a state-machine command.
type Op byte

const (
	OpPut Op = iota + 1
	OpDelete
	OpCompareAndSwap
	// OpPutIfNewer writes Value only when the key is absent or its stored
	// value's version (the first VersionLen bytes, compared bytewise) is
	// lower than Value's: how nodes publish descriptors to the meta range
	// without overwriting a newer one.
	OpPutIfNewer
	// OpIncrement adds 1 to the key's 8-byte big-endian counter and
	// returns the new value (range id allocation).
	OpIncrement
	// OpSplit splits the range at Key; Value is the encoded SplitSpec.
	OpSplit
	// OpMarker changes no data. A new leader applies one at the start of its
	// term so that it knows when an entry of its own term has committed,
	// which read-index requires, and so the FSM's applied index catches up
	// with the commit index (hashicorp/raft never hands no-op entries to
	// the FSM).
	OpMarker
	// OpHibernate changes no data either. A leader whose range has been
	// idle appends it; every replica that applies it, with nothing after
	// it in its log, shuts its Raft instance down a moment later, and the
	// next request or Raft message wakes it (see shard's hibernation).
	OpHibernate
	// OpPutLease is OpPut with the key attached to Lease: the key goes when
	// an OpLeaseRevoke for that lease reaches the range.
	OpPutLease
	// OpLeaseRevoke deletes every key of the range attached to Lease,
	// recording Cause in their delete events. Key is empty.
	OpLeaseRevoke
)

// Command is one state-machine command, encoded into a Raft log entry.
type Command struct {
	Op  Op
	Key []byte
	// Value is the value to write (Put, CompareAndSwap).
	Value []byte
	// Expected is the value CompareAndSwap compares with, unless
	// ExpectMissing asks for the key to be absent.
	Expected      []byte
	ExpectMissing bool
	// Lease is the lease of OpPutLease and OpLeaseRevoke.
	Lease uint64
	// Cause is why OpLeaseRevoke deletes (CauseLeaseExpired or
	// CauseLeaseRevoked).
	Cause DeleteCause
}

// ErrBadCommand is returned for a log entry that does not decode; it would
// mean a bug or corruption, never user input (input is validated first).
var ErrBadCommand = errors.New("raftstore: malformed command")

const cmdVersion = 1

// Encode appends the command's binary form to dst. The format is
// version, op, then length-prefixed fields; a fixed layout keeps the apply
// path free of reflection and allocation.
func (c *Command) Encode(dst []byte) []byte {
	dst = append(dst, cmdVersion, byte(c.Op))
	dst = binary.AppendUvarint(dst, uint64(len(c.Key)))
	dst = append(dst, c.Key...)
	switch c.Op {
	case OpPut, OpPutIfNewer, OpSplit, OpTxn, OpTxnPrepare, OpTxnResolve, OpTxnFence, OpTxnForget:
		dst = binary.AppendUvarint(dst, uint64(len(c.Value)))
		dst = append(dst, c.Value...)
	case OpPutLease:
		dst = binary.AppendUvarint(dst, uint64(len(c.Value)))
		dst = append(dst, c.Value...)
		dst = binary.AppendUvarint(dst, c.Lease)
	case OpLeaseRevoke:
		dst = binary.AppendUvarint(dst, c.Lease)
		dst = append(dst, byte(c.Cause))
	case OpCompareAndSwap:
		dst = binary.AppendUvarint(dst, uint64(len(c.Value)))
		dst = append(dst, c.Value...)
		var flags byte
		if c.ExpectMissing {
			flags = 1
		}
		dst = append(dst, flags)
		dst = binary.AppendUvarint(dst, uint64(len(c.Expected)))
		dst = append(dst, c.Expected...)
	}
	return dst
}

// DecodeCommand parses b. The returned slices alias b.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) < 2 || b[0] != cmdVersion {
		return c, fmt.Errorf("%w: bad header", ErrBadCommand)
	}
	c.Op = Op(b[1])
	b = b[2:]
	var err error
	if c.Key, b, err = readBytes(b); err != nil {
		return c, err
	}
	switch c.Op {
	case OpPut, OpPutIfNewer, OpSplit, OpTxn, OpTxnPrepare, OpTxnResolve, OpTxnFence, OpTxnForget:
		c.Value, _, err = readBytes(b)
	case OpDelete, OpMarker, OpIncrement, OpHibernate:
	case OpPutLease:
		if c.Value, b, err = readBytes(b); err != nil {
			return c, err
		}
		c.Lease, err = readUvarint(b)
	case OpLeaseRevoke:
		var w int
		c.Lease, w = binary.Uvarint(b)
		if w <= 0 || len(b) < w+1 {
			return c, fmt.Errorf("%w: truncated lease revoke", ErrBadCommand)
		}
		c.Cause = DeleteCause(b[w])
	case OpCompareAndSwap:
		if c.Value, b, err = readBytes(b); err != nil {
			return c, err
		}
		if len(b) < 1 {
			return c, fmt.Errorf("%w: truncated flags", ErrBadCommand)
		}
		c.ExpectMissing = b[0]&1 != 0
		c.Expected, _, err = readBytes(b[1:])
	default:
		return c, fmt.Errorf("%w: unknown op %d", ErrBadCommand, c.Op)
	}
	return c, err
}

func readBytes(b []byte) (field, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, fmt.Errorf("%w: truncated field", ErrBadCommand)
	}
	return b[w : w+int(n)], b[w+int(n):], nil
}

func readUvarint(b []byte) (uint64, error) {
	v, w := binary.Uvarint(b)
	if w <= 0 {
		return 0, fmt.Errorf("%w: truncated number", ErrBadCommand)
	}
	return v, nil
}

// Result is what applying a command returns through the Raft future.
type Result struct {
	// Revision is the log index at which the command was applied.
	Revision uint64
	// Existed reports, for Delete, whether the key was present.
	Existed bool
	// Value is the new counter value of an Increment.
	Value []byte
	// Deleted is how many keys an OpLeaseRevoke deleted (an OpTxnResolve:
	// how many locks it ended).
	Deleted int
	// Txn is a transaction command's outcome.
	Txn *TxnResult
	// Parent and Child are the descriptors after a split.
	Parent, Child *Descriptor
	// Err is ErrCompareFailed when a CompareAndSwap did not match,
	// ErrWrongRange when the key is outside the range (it moved in a split
	// that committed after the command was proposed), ErrBadSplit for a
	// split that could not apply. The command changed nothing.
	Err error
}

// VersionLen is the length of the version prefix OpPutIfNewer compares.
const VersionLen = 16

// SplitSpec is the payload of OpSplit: the new range's id and replicas
// (the leader's configuration when it proposed the split).
type SplitSpec struct {
	ChildID  uint64   `json:"child_id"`
	Replicas []Server `json:"replicas"`
}

// Server is a replica's node id and Raft address.
type Server struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

var (
	// ErrWrongRange: the key is not in this range (any more).
	ErrWrongRange = errors.New("raftstore: key outside the range")
	// ErrBadSplit: the split key is not strictly inside the range.
	ErrBadSplit = errors.New("raftstore: bad split")
	// ErrCorrupt: a range's stored state cannot be decoded, bytes
	// dialkv does not write (damage on disk, or a bug). A read of it fails
	// (readStored names the range and key); applying a command that reads
	// it stops the node (mustLookupLocked).
	ErrCorrupt = errors.New("raftstore: stored state corrupt")
)

// ErrCompareFailed is the Result.Err of a CompareAndSwap whose comparison
// did not hold; nothing was written.
var ErrCompareFailed = errors.New("raftstore: compare failed")
