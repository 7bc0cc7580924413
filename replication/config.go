package replication

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// Peer is a cluster member as named by --initial-cluster.
type Peer struct {
	ID       string
	RaftAddr string
}

// Config configures a Node.
type Config struct {
	NodeID   string
	DataDir  string
	RaftAddr string // listened on and advertised to peers
	GRPCAddr string // advertised to clients
	HTTPAddr string // advertised to clients

	// InitialCluster bootstraps a new cluster when DataDir is empty.
	InitialCluster []Peer
	// Join is a member's client gRPC address; the node asks it to be added.
	Join string

	Replicas      int
	RangeMaxBytes int64

	// Locality is where the node runs, ordered tiers from the widest
	// ("region=eu,zone=a", rpctypes.Locality; empty: unknown). Placement
	// spreads each range's replicas over distinct localities, and read
	// explanations name it.
	Locality string

	Timing shard.Timing
	// CommitInterval is how often the node's applied writes go to its
	// state database (raftstore.Config.CommitInterval); at most
	// MaxCommitInterval.
	CommitInterval time.Duration
	// WatchRetentionBytes and WatchRetentionAge bound each range's change
	// feed on this node (0: raftstore's defaults); a watch cursor older
	// than what is kept is ErrCompacted.
	WatchRetentionBytes int64
	WatchRetentionAge   time.Duration
	// HibernateAfter puts a range's Raft instances to sleep once it has
	// been idle this long (0: never); see shard's hibernation.
	HibernateAfter time.Duration
	// ParallelLeaderAppend overlaps a leader's log fsync with the
	// replication of the same entries (shard.Config.ParallelLeaderAppend).
	ParallelLeaderAppend bool
	// PerRangeStreams turns the shared link off: every range talks to its
	// peers over streams of its own, as releases before the link did. For
	// comparisons; peers on either setting understand each other.
	PerRangeStreams bool
	// SnapshotRate bounds the bytes a second of the snapshots the node
	// receives, when replicas move (raftstore.Config's);
	// 0: no bound.
	SnapshotRate int64
	// SnapshotRateAdaptive steers that pace by the node's WAL sync time,
	// up to SnapshotRate if set (raftstore.Config's).
	SnapshotRateAdaptive bool

	// PeerTLS puts mutual TLS on the Raft port: both ends present a node
	// certificate signed by its CA, and an accepted peer must name a
	// member (peertls.go). Nil: plaintext.
	PeerTLS *tlsconf.Source
	// ClientTLS dials members' client ports (the --join address) over TLS,
	// for a cluster whose client port has TLS on. Nil: plaintext.
	ClientTLS *tlsconf.Source

	// DialAddr maps a peer's advertised Raft address to the address to dial
	// (tests route links through fault-injecting proxies). Nil: identity.
	DialAddr func(string) string

	Logger *slog.Logger
}

// DefaultConfig returns a Config with kvd's defaults and no identity.
func DefaultConfig() Config {
	return Config{
		Replicas:       3,
		RangeMaxBytes:  64 << 20,
		Timing:         shard.DefaultTiming(),
		CommitInterval: DefaultCommitInterval,
		HibernateAfter: 30 * time.Second,
		Logger:         slog.Default(),

		ParallelLeaderAppend: true,
	}
}

// DefaultCommitInterval is kvd's --state-commit-interval.
const DefaultCommitInterval = raftstore.DefaultCommitInterval

// MaxCommitInterval bounds CommitInterval: the log behind a range's
// last commit stays on disk until the next one.
const MaxCommitInterval = 10 * time.Second

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if c.NodeID == "" || strings.ContainsAny(c.NodeID, "=, \t\n") {
		return fmt.Errorf("replication: node id %q must be non-empty and contain no '=', ',' or spaces", c.NodeID)
	}
	if c.DataDir == "" {
		return errors.New("replication: data directory is required")
	}
	for name, a := range map[string]string{"raft": c.RaftAddr, "grpc": c.GRPCAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("replication: %s address %q: %w", name, a, err)
		}
	}
	if len(c.InitialCluster) > 0 && c.Join != "" {
		return errors.New("replication: give --initial-cluster or --join, not both")
	}
	seen := map[string]bool{}
	self := false
	for _, p := range c.InitialCluster {
		if seen[p.ID] {
			return fmt.Errorf("replication: node %q appears twice in the initial cluster", p.ID)
		}
		seen[p.ID] = true
		if p.ID == c.NodeID {
			self = true
			if p.RaftAddr != c.RaftAddr {
				return fmt.Errorf("replication: initial cluster gives %s raft address %s, but --raft-addr is %s", p.ID, p.RaftAddr, c.RaftAddr)
			}
		}
	}
	if len(c.InitialCluster) > 0 && !self {
		return fmt.Errorf("replication: node %q is not in the initial cluster", c.NodeID)
	}
	if _, err := rpctypes.ParseLocality(c.Locality); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	if c.Replicas < 1 {
		return fmt.Errorf("replication: replicas must be at least 1, got %d", c.Replicas)
	}
	if c.CommitInterval < 0 || c.CommitInterval > MaxCommitInterval {
		return fmt.Errorf("replication: state commit interval %v: want at most %v (0: the default)", c.CommitInterval, MaxCommitInterval)
	}
	if c.RangeMaxBytes < 1<<10 {
		return fmt.Errorf("replication: range max bytes must be at least 1 KiB, got %d", c.RangeMaxBytes)
	}
	return nil
}

// ParseInitialCluster parses "n1=127.0.0.1:7012,n2=127.0.0.1:7022".
func ParseInitialCluster(s string) ([]Peer, error) {
	if s == "" {
		return nil, nil
	}
	var peers []Peer
	for part := range strings.SplitSeq(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("initial cluster entry %q: want ID=RAFT_ADDR", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("initial cluster entry %q: %w", part, err)
		}
		peers = append(peers, Peer{ID: id, RaftAddr: addr})
	}
	return peers, nil
}
