package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// firstRangeID is the range that covers the whole key space in a new
// cluster.
const firstRangeID = 1

// Node hosts the range replicas of one kvd process.
type Node struct {
	cfg   Config
	log   *slog.Logger
	store *raftstore.Store
	mux   *Mux

	mu     sync.RWMutex
	shards map[uint64]*shard.Shard

	fresh freshnessDemand

	peersMu sync.Mutex
	peers   map[string]*grpc.ClientConn // internal gRPC, by Raft address

	started time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
}

// identity is what DataDir remembers about the node that owns it.
type identity struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
}

// Start opens the node's storage, starts its ranges and, on an empty data
// directory, bootstraps (InitialCluster) or asks to join (Join).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	if err := checkIdentity(cfg); err != nil {
		return nil, err
	}
	scfg := raftstore.DefaultConfig(cfg.DataDir)
	scfg.Logger = log
	if cfg.CommitInterval > 0 {
		scfg.CommitInterval = cfg.CommitInterval
	}
	store, err := raftstore.Open(scfg)
	if err != nil {
		return nil, err
	}
	mux, err := NewMux(cfg.RaftAddr, cfg.DialAddr, log)
	if err != nil {
		store.Close()
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		log:     log,
		store:   store,
		mux:     mux,
		shards:  make(map[uint64]*shard.Shard),
		peers:   make(map[string]*grpc.ClientConn),
		started: time.Now(),
		stop:    make(chan struct{}),
	}
	n.wg.Add(1)
	go n.freshnessLoop()
	desc := shard.Descriptor{ID: firstRangeID, Generation: 1}
	s, err := n.openShard(desc)
	if err != nil {
		n.Close()
		return nil, err
	}
	hasState, err := n.hasRaftState(s)
	if err != nil {
		n.Close()
		return nil, err
	}
	switch {
	case hasState:
		log.Info("resuming from existing state", "dir", cfg.DataDir, "applied", s.FSM().AppliedIndex())
	case len(cfg.InitialCluster) > 0:
		servers := make([]raft.Server, 0, len(cfg.InitialCluster))
		for _, p := range cfg.InitialCluster {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		}
		if err := s.Bootstrap(servers); err != nil {
			n.Close()
			return nil, err
		}
		log.Info("bootstrapped a new cluster", "members", len(servers))
	case cfg.Join != "":
		n.wg.Add(1)
		go n.joinLoop(cfg.Join)
	default:
		n.Close()
		return nil, fmt.Errorf("replication: %s holds no cluster state: give --initial-cluster to bootstrap or --join to join", cfg.DataDir)
	}
	return n, nil
}

func checkIdentity(cfg Config) error {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("replication: create data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "node.json")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		b, _ = json.Marshal(identity{ID: cfg.NodeID, RaftAddr: cfg.RaftAddr})
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("replication: write node identity: %w", err)
		}
		return os.Rename(tmp, path)
	case err != nil:
		return fmt.Errorf("replication: read node identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return fmt.Errorf("replication: %s is corrupt: %w", path, err)
	}
	if id.ID != cfg.NodeID {
		return fmt.Errorf("replication: data dir %s belongs to node %q, not %q", cfg.DataDir, id.ID, cfg.NodeID)
	}
	return nil
}

func (n *Node) hasRaftState(s *shard.Shard) (bool, error) {
	last := s.Raft().LastIndex()
	if last > 0 {
		return true, nil
	}
	servers, err := s.Configuration()
	if err != nil {
		return false, err
	}
	return len(servers) > 0, nil
}

func (n *Node) openShard(desc shard.Descriptor) (*shard.Shard, error) {
	fsm, err := n.store.Range(desc.ID)
	if err != nil {
		return nil, err
	}
	hl := logadapt.HCLog(n.log.With("range", desc.ID))
	storage, err := n.store.OpenRaftStorage(desc.ID, hl)
	if err != nil {
		return nil, err
	}
	transport := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.mux.RangeLayer(desc.ID),
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("transport"),
	})
	s, err := shard.New(shard.Config{
		NodeID:     n.cfg.NodeID,
		Descriptor: desc,
		FSM:        fsm,
		Storage:    storage,
		Transport:  transport,
		Logger:     n.log,
		Timing:     n.cfg.Timing,
	})
	if err != nil {
		storage.Close()
		return nil, err
	}
	n.mu.Lock()
	n.shards[desc.ID] = s
	n.mu.Unlock()
	return s, nil
}

// joinLoop asks an existing member to add this node until it succeeds or
// the node stops. Membership changes are idempotent on the leader, so a
// retry after an unknown outcome is safe.
func (n *Node) joinLoop(target string) {
	defer n.wg.Done()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.log.Error("cannot join", "target", target, "err", err)
		return
	}
	defer conn.Close()
	c := kvpb.NewClusterClient(conn)
	backoff := 100 * time.Millisecond
	for attempt := 1; attempt <= 120; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.AddMember(ctx, &kvpb.AddMemberRequest{Id: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr})
		cancel()
		if err == nil {
			n.log.Info("joined the cluster", "via", target)
			return
		}
		n.log.Warn("join attempt failed", "via", target, "attempt", attempt, "err", err)
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	n.log.Error("gave up joining", "via", target)
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// InternalListener yields connections for the internal gRPC server, which
// must serve the same KV and Cluster services as the public one.
func (n *Node) InternalListener() net.Listener { return n.mux.GRPCListener() }

// Shards returns the node's replicas ordered by range start.
func (n *Node) Shards() []*shard.Shard {
	n.mu.RLock()
	out := make([]*shard.Shard, 0, len(n.shards))
	for _, s := range n.shards {
		out = append(out, s)
	}
	n.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Descriptor(), out[j].Descriptor()
		return string(a.Start) < string(b.Start)
	})
	return out
}

// shardFor returns the replica whose range holds key.
func (n *Node) shardFor(key []byte) (*shard.Shard, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, s := range n.shards {
		d := s.Descriptor()
		if d.Contains(key) {
			return s, nil
		}
	}
	return nil, ErrKeyOutOfRange
}

// peer returns a client connection to the internal gRPC service of the node
// at raftAddr.
func (n *Node) peer(raftAddr string) (*grpc.ClientConn, error) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if c, ok := n.peers[raftAddr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+raftAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			timeout := 5 * time.Second
			if dl, ok := ctx.Deadline(); ok {
				timeout = time.Until(dl)
			}
			return n.mux.DialGRPC(addr, timeout)
		}))
	if err != nil {
		return nil, fmt.Errorf("replication: dial peer %s: %w", raftAddr, err)
	}
	n.peers[raftAddr] = c
	return c, nil
}

// Close stops every replica, the Raft port and the store.
func (n *Node) Close() error {
	select {
	case <-n.stop:
		return nil
	default:
	}
	close(n.stop)
	var errs []error
	for _, s := range n.Shards() {
		if err := s.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	n.wg.Wait()
	if err := n.mux.Close(); err != nil {
		errs = append(errs, err)
	}
	n.peersMu.Lock()
	for _, c := range n.peers {
		c.Close()
	}
	n.peersMu.Unlock()
	if err := n.store.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Ready reports nil when every range this node hosts has a known leader,
// else why not; /readyz serves it.
func (n *Node) Ready(context.Context) error {
	for _, s := range n.Shards() {
		if id, _ := s.Leader(); id == "" {
			return fmt.Errorf("range %d has no leader", s.ID())
		}
	}
	return nil
}
