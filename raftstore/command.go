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
	// OpMarker changes no data. A new leader applies one at the start of its
	// term so that it knows when an entry of its own term has committed,
	// which read-index requires, and so the FSM's applied index catches up
	// with the commit index (hashicorp/raft never hands no-op entries to
	// the FSM).
	OpMarker
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
	case OpPut:
		dst = binary.AppendUvarint(dst, uint64(len(c.Value)))
		dst = append(dst, c.Value...)
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
	case OpPut:
		c.Value, _, err = readBytes(b)
	case OpDelete, OpMarker:
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

// Result is what applying a command returns through the Raft future.
type Result struct {
	// Revision is the log index at which the command was applied.
	Revision uint64
	// Existed reports, for Delete, whether the key was present.
	Existed bool
	// Err is ErrCompareFailed when a CompareAndSwap did not match.
	Err error
}

// ErrCompareFailed is the Result.Err of a CompareAndSwap whose comparison
// did not hold; nothing was written.
var ErrCompareFailed = errors.New("raftstore: compare failed")
