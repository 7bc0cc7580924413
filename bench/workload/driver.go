package workload

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Driver is one connection's worth of client to the store under test.
// The engine shares a Driver between several client goroutines, so its
// methods must be safe for concurrent use.
type Driver interface {
	// Put writes val under key.
	Put(ctx context.Context, key, val []byte) error
	// Get reads key at level. A missing key is ErrNotFound (wrapped or
	// not), which the engine counts as a miss rather than an error.
	Get(ctx context.Context, key []byte, level Level) error
	// Close releases the driver's connections.
	Close() error
}

// TxnDriver is a Driver that also runs the Txn workload's transactions.
type TxnDriver interface {
	Driver
	// Txn runs one transaction atomically: if the value of keys[0] is
	// expect (expect nil: if keys[0] does not exist), put val under every
	// key and return ok; otherwise read keys[0] and return its value as
	// current (nil when it does not exist, non-nil but empty for an empty
	// value).
	Txn(ctx context.Context, keys [][]byte, expect, val []byte) (ok bool, current []byte, err error)
}

var (
	// ErrNotFound is returned by Driver.Get for a missing key.
	ErrNotFound = errors.New("workload: key not found")
	// ErrUnsupportedLevel is returned by a driver asked for a read level
	// its store does not have.
	ErrUnsupportedLevel = errors.New("workload: consistency level not supported by this system")
)

// Level is a read's consistency level, named as dialkv names them. etcd has
// two of them: Linearizable is its default ("l") and Stale its serializable
// read ("s").
type Level string

// The read levels.
const (
	Linearizable Level = "linearizable"
	Bounded      Level = "bounded"
	Session      Level = "session"
	Stale        Level = "stale"
)

// ParseLevel accepts the level names above in any case, plus etcd's "l"
// (linearizable) and "s" (serializable, i.e. stale).
func ParseLevel(s string) (Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "linearizable", "l":
		return Linearizable, nil
	case "stale", "s", "serializable":
		return Stale, nil
	case "bounded":
		return Bounded, nil
	case "session":
		return Session, nil
	}
	return "", fmt.Errorf("unknown consistency %q (want linearizable, stale, bounded or session; etcd: l or s)", s)
}
