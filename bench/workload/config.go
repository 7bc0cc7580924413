package workload

import (
	"errors"
	"fmt"
	"time"
)

// Kind names a workload.
type Kind string

// The workloads.
const (
	// Put writes a random value to a chosen key.
	Put Kind = "put"
	// Get reads a chosen key at Config.Level.
	Get Kind = "get"
	// Mixed does Get with probability Config.ReadRatio and Put otherwise.
	Mixed Kind = "mixed"
	// Load writes every key of the key space exactly once, in parallel;
	// use it to fill the store before a get or mixed run.
	Load Kind = "load"
	// Txn runs transactions on Config.TxnKeys keys: if the first key
	// still holds what the client last wrote there, put a new value under
	// every key; else read the first key (to know what to compare next
	// time). Each client owns its keys, so the compares hold but for its
	// first transaction and after an error of unknown outcome.
	Txn Kind = "txn"
)

// ParseKind accepts put, get, mixed, load and txn.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case Put, Get, Mixed, Load, Txn:
		return k, nil
	}
	return "", fmt.Errorf("unknown workload %q (want put, get, mixed, load or txn)", s)
}

// Defaults of Config.
const (
	DefaultClients   = 16
	DefaultKeys      = 10000
	DefaultValueSize = 256
	DefaultDuration  = 10 * time.Second
	DefaultOpTimeout = 10 * time.Second
	DefaultKeyPrefix = "kvbench/"
	DefaultReadRatio = 0.5
	DefaultTxnKeys   = 2
	// MaxTxnKeys bounds Config.TxnKeys well below any server's limit on
	// operations per transaction.
	MaxTxnKeys = 16
	// MaxDuration caps any run, whatever the flags say.
	MaxDuration = 24 * time.Hour
)

// Config describes one run.
type Config struct {
	Workload Kind
	// ReadRatio is the fraction of gets in a Mixed run, in [0, 1].
	ReadRatio float64
	// TxnKeys is the number of keys each Txn transaction writes. Client i
	// owns the keys TxnKeyIndexes gives it, spread over the key space, so
	// that a key space split at Keys*j/TxnKeys (or finer, at the same
	// points) puts each of a transaction's keys in a range of its own.
	TxnKeys int
	// Level is the consistency of gets.
	Level Level
	// Clients is the number of closed-loop client goroutines: each issues
	// its next operation when the previous one returns.
	Clients int
	// Keys is the size of the key space: keys are KeyPrefix followed by a
	// zero-padded index in [0, Keys).
	Keys      int
	KeyPrefix string
	// ValueSize is the size of every written value, in bytes.
	ValueSize int
	// Zipf is the zipfian skew theta in (0, 1) (YCSB uses 0.99), or 0 for
	// uniformly chosen keys.
	Zipf float64
	// Duration always bounds the run. With Ops (or for Load) it is a cap.
	Duration time.Duration
	// Ops, when positive, ends the run after that many operations.
	Ops int64
	// OpTimeout bounds each operation.
	OpTimeout time.Duration
	// Seed makes key choices reproducible; client i uses Seed+i.
	Seed int64
}

// DefaultConfig returns a 10 s put run over 10,000 keys.
func DefaultConfig() Config {
	return Config{
		Workload:  Put,
		ReadRatio: DefaultReadRatio,
		TxnKeys:   DefaultTxnKeys,
		Level:     Linearizable,
		Clients:   DefaultClients,
		Keys:      DefaultKeys,
		KeyPrefix: DefaultKeyPrefix,
		ValueSize: DefaultValueSize,
		Duration:  DefaultDuration,
		OpTimeout: DefaultOpTimeout,
		Seed:      1,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if _, err := ParseKind(string(c.Workload)); err != nil {
		return err
	}
	if _, err := ParseLevel(string(c.Level)); err != nil {
		return err
	}
	switch {
	case c.ReadRatio < 0 || c.ReadRatio > 1:
		return fmt.Errorf("read ratio %v is not in [0, 1]", c.ReadRatio)
	case c.Clients < 1:
		return fmt.Errorf("clients %d: want at least 1", c.Clients)
	case c.Keys < 1:
		return fmt.Errorf("keys %d: want at least 1", c.Keys)
	case c.ValueSize < 0:
		return fmt.Errorf("value size %d is negative", c.ValueSize)
	case c.Zipf != 0 && (c.Zipf <= 0 || c.Zipf >= 1):
		return fmt.Errorf("zipf theta %v: want 0 (uniform) or a value in (0, 1), e.g. 0.99", c.Zipf)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("duration %v: want a positive duration up to %v", c.Duration, MaxDuration)
	case c.Workload == Txn && (c.TxnKeys < 1 || c.TxnKeys > MaxTxnKeys):
		return fmt.Errorf("txn keys %d: want 1 to %d", c.TxnKeys, MaxTxnKeys)
	case c.Workload == Txn && c.Zipf != 0:
		return errors.New("zipf: the txn workload's clients each write keys of their own, not chosen keys")
	case c.Workload == Txn && c.Keys < c.TxnKeys*c.Clients:
		return fmt.Errorf("keys %d: the txn workload gives each of %d clients %d keys of its own; want at least %d",
			c.Keys, c.Clients, c.TxnKeys, c.TxnKeys*c.Clients)
	case c.Ops < 0:
		return errors.New("ops is negative")
	case c.OpTimeout <= 0:
		return fmt.Errorf("op timeout %v: want a positive duration", c.OpTimeout)
	}
	return nil
}

// Distribution names the key distribution as reports show it.
func (c Config) Distribution() string {
	if c.Workload == Txn {
		return "own keys per client"
	}
	if c.Zipf == 0 {
		return "uniform"
	}
	return fmt.Sprintf("zipfian(%g)", c.Zipf)
}

// TxnKeyIndexes returns the indexes of the keys that client id (0-based)
// of a Txn run writes. The key space is cut into TxnKeys stripes of equal
// width and the client's j-th key lies in stripe j, at the same offset in
// each; the clients' offsets are spread over the stripe. Validate ensures
// a stripe holds a key per client, so no two clients share a key.
func (c Config) TxnKeyIndexes(id int) []int {
	width := c.Keys / c.TxnKeys
	offset := id * width / c.Clients
	out := make([]int, c.TxnKeys)
	for j := range out {
		out[j] = j*width + offset
	}
	return out
}
