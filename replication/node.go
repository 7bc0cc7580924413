package replication

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication/link"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// firstUserRangeID is the range that covers the whole key space in a new
// cluster; range 1 is the meta range.
const firstUserRangeID = 2

// Node hosts the range replicas of one kvd process.
//
// Locking: acquire splitMu before mu. A range's FSM takes splitMu (for
// writing, as its split lock) before the store's commitMu and its own
// mu, and holds it through onSplit, so onSplit and what it calls (opening
// the child's replica, invalidating routes) must never take splitMu, as
// localShard does. Holding mu, the node reads shard descriptors (a range
// FSM's mu, for reading) and nothing else. peersMu, routes.mu and pub.mu
// are leaves: never take another lock while holding one.
type Node struct {
	cfg   Config
	log   *slog.Logger
	store *raftstore.Store
	mux   *Mux
	// link carries every range's Raft traffic to each peer over one
	// connection; nil with Config.PerRangeStreams.
	link *link.Link
	// unknownCh carries the ranges peers sent messages for that this node
	// does not host, to missedSplitLoop.
	unknownCh chan uint64

	// mu guards shards.
	mu     sync.RWMutex
	shards map[uint64]*shard.Shard

	// splitMu closes the window between a split narrowing the parent and
	// the new range's replica being registered: onSplit holds it for
	// writing meanwhile, and key lookups (localShard) hold it for reading,
	// so no lookup finds neither range.
	splitMu sync.RWMutex

	fresh  freshnessDemand
	routes routeCache // its own mu
	leases *lessor    // its own mu
	// leaseIDs hands out lease ids from blocks this node reserved while
	// leading the meta range (its own mu).
	leaseIDs leaseIDs
	// leaseWrites are the puts with a lease this node proposes, which a
	// revoke waits for (its own mu).
	leaseWrites leaseWrites
	// afterLeaseCheck, when set, runs between a put's lease check and its
	// proposal (tests hold a put there).
	afterLeaseCheck atomic.Pointer[func()]
	// expiryClears bounds the expired leases whose keys are being
	// deleted at once; more wait for the sweeps.
	expiryClears chan struct{}
	// keepAliveStreams counts the streams keepalive sessions opened to
	// forward to the meta leader (tests see one per client stream).
	keepAliveStreams atomic.Uint64

	// clusterID caches the meta range's cluster id once read (backup.go).
	clusterID atomic.Pointer[string]

	// watchRemoteFirst makes watch feeds read other nodes' replicas
	// before this node's own (tests of the remote path).
	watchRemoteFirst atomic.Bool
	hubs             feedHubs // its own mu, then each hub's (feedhub.go)
	disk             diskWatch
	pub              published // its own mu

	// joining is set when this start joins a cluster (--join on a data
	// directory never initialised).
	joining bool

	// peersMu guards peers.
	peersMu sync.Mutex
	peers   map[string]*grpc.ClientConn // internal gRPC, by Raft address

	started time.Time

	// ctx is cancelled by Close, so the background loops' requests to
	// other nodes end at once instead of holding up the shutdown.
	ctx    context.Context
	cancel context.CancelFunc

	deadSince map[string]time.Time // node id -> first seen unreachable (placement goroutine only)
	stop      chan struct{}
	wg        sync.WaitGroup
}

// identity is what DataDir remembers about the node that owns it.
type identity struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	// Initialized is set once the node has bootstrapped or started to
	// join: from then on it never bootstraps again, even if all its ranges
	// moved away.
	Initialized bool `json:"initialized"`
	// JoinPending is set while a node started with --join on an empty
	// data directory has not yet made itself an active member
	// (registerLoop): a crash before that resumes the join on restart.
	JoinPending bool `json:"join_pending,omitempty"`
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
	if cfg.WatchRetentionBytes > 0 {
		scfg.EventRetentionBytes = cfg.WatchRetentionBytes
	}
	if cfg.WatchRetentionAge > 0 {
		scfg.EventRetentionAge = cfg.WatchRetentionAge
	}
	scfg.SnapshotRate = cfg.SnapshotRate
	scfg.SnapshotRateAdaptive = cfg.SnapshotRateAdaptive
	store, err := raftstore.Open(scfg)
	if err != nil {
		return nil, err
	}
	gate := newPeerGate(cfg)
	tlsServer, tlsClient, err := peerTLS(cfg, gate)
	if err != nil {
		store.Close()
		return nil, err
	}
	mux, err := NewMuxTLS(cfg.RaftAddr, cfg.DialAddr, tlsServer, tlsClient, log)
	if err != nil {
		store.Close()
		return nil, err
	}
	var lk *link.Link
	if !cfg.PerRangeStreams {
		lcfg := link.DefaultConfig()
		lcfg.LocalAddr = raft.ServerAddress(cfg.RaftAddr)
		lcfg.Listener, lcfg.Dial = mux.LinkListener(), mux.DialLink
		lcfg.Logger = log.With("component", "link")
		if lk, err = link.New(lcfg); err != nil {
			mux.Close()
			store.Close()
			return nil, err
		}
	}
	n := &Node{
		cfg:          cfg,
		log:          log,
		store:        store,
		mux:          mux,
		link:         lk,
		unknownCh:    make(chan uint64, missedQueue),
		shards:       make(map[uint64]*shard.Shard),
		leases:       newLessor(),
		expiryClears: make(chan struct{}, 4),
		peers:        make(map[string]*grpc.ClientConn),
		started:      time.Now(),
		stop:         make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.deadSince = map[string]time.Time{}
	n.routes.n = n
	// From here the Raft port's handshakes may consult the node.
	gate.node.Store(n)
	descs, err := store.Descriptors()
	if err != nil {
		n.Close()
		return nil, err
	}
	initialized, joinPending, err := n.identityInitialized()
	if err != nil {
		n.Close()
		return nil, err
	}
	n.joining = joinPending
	switch {
	case initialized || len(descs) > 0:
		for _, d := range descs {
			if _, err := n.openShard(d); err != nil {
				n.Close()
				return nil, err
			}
		}
		log.Info("resuming from existing state", "dir", cfg.DataDir, "ranges", len(descs))
	case len(cfg.InitialCluster) > 0:
		if err := n.bootstrap(); err != nil {
			n.Close()
			return nil, err
		}
	case cfg.Join == "":
		n.Close()
		return nil, fmt.Errorf("replication: %s holds no cluster state: give --initial-cluster to bootstrap or --join to join", cfg.DataDir)
	default:
		n.joining = true
	}
	if err := n.markInitialized(n.joining); err != nil {
		n.Close()
		return nil, err
	}
	for _, p := range cfg.InitialCluster {
		n.routes.addSeed(p.RaftAddr)
	}
	if cfg.Join != "" {
		n.routes.addSeedClient(cfg.Join)
	}
	if n.link != nil {
		n.link.OnUnknownRange(n.unknownRange)
	}
	n.wg.Add(7)
	go n.missedSplitLoop()
	go n.leaseLoop()
	go n.resolverLoop()
	go n.freshnessLoop()
	go n.registerLoop()
	go n.publishLoop()
	go n.placementLoop()
	return n, nil
}

// bootstrap creates a new cluster's first two ranges on the founding
// members: the meta range (routing table and node registry) and one user
// range covering every key. Each founding member runs it with the same
// --initial-cluster, so each creates exactly the replicas it belongs to and
// all bootstrap identical configurations.
func (n *Node) bootstrap() error {
	members := slices.Clone(n.cfg.InitialCluster)
	slices.SortFunc(members, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	pick := func(count int) []Peer { return members[:min(count, len(members))] }
	plans := []struct {
		desc    shard.Descriptor
		members []Peer
	}{
		{shard.Descriptor{ID: raftstore.MetaRangeID, Generation: 1}, pick(max(n.cfg.Replicas, 3))},
		{shard.Descriptor{ID: firstUserRangeID, Generation: 1}, pick(n.cfg.Replicas)},
	}
	for _, p := range plans {
		var servers []raft.Server
		self := false
		for _, m := range p.members {
			p.desc.Replicas = append(p.desc.Replicas, m.ID)
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)})
			self = self || m.ID == n.cfg.NodeID
		}
		if !self {
			continue
		}
		s, err := n.openShard(p.desc)
		if err != nil {
			return err
		}
		if err := s.Bootstrap(servers); err != nil {
			return err
		}
	}
	n.log.Info("bootstrapped a new cluster", "members", len(members))
	return nil
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

func (n *Node) identityPath() string { return filepath.Join(n.cfg.DataDir, "node.json") }

func (n *Node) identityInitialized() (initialized, joinPending bool, err error) {
	b, err := os.ReadFile(n.identityPath())
	if err != nil {
		return false, false, fmt.Errorf("replication: read node identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return false, false, fmt.Errorf("replication: %s is corrupt: %w", n.identityPath(), err)
	}
	return id.Initialized, id.JoinPending, nil
}

// markInitialized records that the node has bootstrapped or started to
// join, and whether its join is still to be completed (JoinPending).
func (n *Node) markInitialized(joinPending bool) error {
	b, _ := json.Marshal(identity{ID: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, Initialized: true, JoinPending: joinPending})
	tmp := n.identityPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("replication: write node identity: %w", err)
	}
	if err := os.Rename(tmp, n.identityPath()); err != nil {
		return fmt.Errorf("replication: write node identity: %w", err)
	}
	return nil
}

// openShard starts the local replica of a range. A range created by a
// split whose group was not bootstrapped yet (a crash in between) is
// bootstrapped here.
func (n *Node) openShard(desc shard.Descriptor) (*shard.Shard, error) {
	if s := n.shardByID(desc.ID); s != nil {
		return s, nil
	}
	fsm, err := n.store.OpenRange(desc)
	if err != nil {
		return nil, err
	}
	fsm.SetSplitHandler(&n.splitMu, n.onSplit)
	if desc.IsMeta() {
		if err := n.leases.load(fsm); err != nil {
			return nil, fmt.Errorf("replication: load leases: %w", err)
		}
		fsm.SetApplyObserver(n.leases.observe)
		fsm.SetRestoreHandler(func() {
			if err := n.leases.reload(fsm); err != nil {
				n.log.Error("reading the leases again after a snapshot", "err", err)
			}
		})
	}
	hl := logadapt.HCLog(n.log.With("range", desc.ID))
	storage, err := n.store.OpenRaftStorage(desc.ID, hl)
	if err != nil {
		return nil, err
	}
	// The range's own streams: its only transport with PerRangeStreams,
	// otherwise the link's way to peers that do not speak the link yet
	// (a rolling upgrade).
	var transport raft.Transport = rangeStreams{raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.mux.RangeLayer(desc.ID),
		MaxPool: 4,
		// I/O deadline of one RPC. Raft waits for in-flight RPCs when it
		// shuts down, so a long one (to a paused peer) holds up SIGTERM.
		Timeout: 2 * time.Second,
		Logger:  hl.Named("transport"),
	})}
	if n.link != nil {
		rt, err := n.link.Open(desc.ID, transport)
		if err != nil {
			transport.(raft.WithClose).Close()
			storage.Close()
			return nil, err
		}
		transport = rt
	}
	s, err := shard.New(shard.Config{
		NodeID:     n.cfg.NodeID,
		Descriptor: desc,
		FSM:        fsm,
		Storage:    storage,
		Transport:  transport,
		Logger:     n.log,
		Timing:     n.cfg.Timing,

		HibernateAfter:       n.cfg.HibernateAfter,
		ParallelLeaderAppend: n.cfg.ParallelLeaderAppend,
	})
	if err != nil {
		// Unregister the range from the link too (closing is idempotent
		// if the shard got as far as closing it), so that a later open of
		// the same range is not refused as a duplicate.
		transport.(raft.WithClose).Close()
		storage.Close()
		return nil, err
	}
	n.mu.Lock()
	n.shards[desc.ID] = s
	n.mu.Unlock()
	pending, err := n.store.PendingBootstrap(desc.ID)
	if err != nil {
		return nil, err
	}
	if len(pending) > 0 {
		var servers []raft.Server
		for _, p := range pending {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := s.Bootstrap(servers); err != nil {
			return nil, err
		}
		if err := n.store.ClearBootstrap(desc.ID); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// onSplit runs on the parent's FSM goroutine once a split is durable on
// this replica, with splitMu held: the new range's replica starts here,
// from the keys that moved, and bootstraps the group with the parent's
// replicas.
func (n *Node) onSplit(parent, child shard.Descriptor) {
	n.log.Info("range split", "range", parent.ID, "at", fmt.Sprintf("%q", child.Start), "new_range", child.ID)
	select {
	case <-n.stop:
		return // shutting down; the restart bootstraps the child
	default:
	}
	if _, err := n.openShard(child); err != nil {
		n.log.Error("cannot start the new range of a split", "range", child.ID, "err", err)
	}
	n.routes.invalidate()
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// InternalListener yields connections for the internal gRPC server, which
// must serve the same KV and Cluster services as the public one.
func (n *Node) InternalListener() net.Listener { return n.mux.GRPCListener() }

// Shards returns the node's replicas ordered by range start.
func (n *Node) Shards() []*shard.Shard {
	n.mu.RLock()
	type keyed struct {
		start []byte
		s     *shard.Shard
	}
	byStart := make([]keyed, 0, len(n.shards))
	for _, s := range n.shards {
		byStart = append(byStart, keyed{s: s})
	}
	n.mu.RUnlock()
	// One descriptor copy per range, not two per comparison: the
	// background loops list the shards many times a second.
	for i := range byStart {
		byStart[i].start = byStart[i].s.Descriptor().Start
	}
	slices.SortFunc(byStart, func(a, b keyed) int { return bytes.Compare(a.start, b.start) })
	out := make([]*shard.Shard, len(byStart))
	for i, e := range byStart {
		out[i] = e.s
	}
	return out
}

// maxMessage bounds messages between nodes: a scan page or a forwarded
// request with the largest key and values.
const maxMessage = 64 << 20

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
		// Fail fast on a peer that is down (forward then waits for a new
		// leader), but reconnect quickly once it is back.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
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
	n.cancel()
	// A paced snapshot copy or restore would hold its Raft group's
	// shutdown for as long as the rate makes it last.
	n.store.StopSnapshots()
	// Shards stop in parallel (16 at a time): each waits for its Raft
	// goroutines and in-flight RPCs, and a node with a thousand ranges
	// took longer than SIGTERM's grace period one after another.
	shards := n.Shards()
	errc := make([]error, len(shards))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, s := range shards {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errc[i] = s.Shutdown()
		})
	}
	wg.Wait()
	errs := slices.DeleteFunc(errc, func(err error) bool { return err == nil })
	n.wg.Wait()
	// The link after the shards (each closed its range's transport), and
	// before the mux that feeds it.
	if n.link != nil {
		if err := n.link.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.mux.Close(); err != nil {
		errs = append(errs, err)
	}
	n.peersMu.Lock()
	for _, c := range n.peers {
		c.Close()
	}
	n.peersMu.Unlock()
	n.routes.close()
	if err := n.store.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Ready reports nil when the data filesystem has room for writes
// (diskReady) and every range this node hosts has a known leader and a
// log that takes its entries, else why not; /readyz serves it.
func (n *Node) Ready(context.Context) error {
	if err := n.diskReady(); err != nil {
		return err
	}
	for _, s := range n.Shards() {
		if id, _ := s.Leader(); id == "" && !s.Asleep() {
			return fmt.Errorf("%w for range %d", ErrNoLeader, s.ID())
		}
		// A replica whose appends keep failing has a leader but takes
		// nothing from it: the range runs on one replica fewer.
		if err := s.AppendHealth(); err != nil {
			return err
		}
	}
	return nil
}

// rangeStreams is a range's own NetworkTransport (snapshots, and peers
// that do not speak the link). hashicorp/raft's Close leaves the
// connections it pooled open, and the peer's handler of each then waits
// on it until the garbage collector closes it (goleak caught one in the
// api tests): Close here also closes them.
type rangeStreams struct{ *raft.NetworkTransport }

func (t rangeStreams) Close() error {
	err := t.NetworkTransport.Close()
	t.CloseStreams()
	return err
}
