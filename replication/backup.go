package replication

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/backupfile"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// Backup and restore (kvctl backup save, kvd restore).
//
// A backup reads each user range from one replica at one applied index
// of that replica (BackupRange), after the replica has caught up with
// everything its leader had committed when the backup of the range began,
// so every write acknowledged before then is in it. The meta range is
// not backed up: it is the cluster's own bookkeeping (routing, nodes,
// leases), rebuilt by the restored cluster.
//
// Transactions: a range's locks are never part of its data, so no file
// holds a transaction's undecided writes; and a range is read only once
// it holds no locks (waiting up to backupLockWait), so a cross-range
// transaction that had prepared in a range before that range is read is
// in its file exactly when it committed. See the README for what that
// guarantees across ranges.
//
// A restore writes a data directory per founding node (PrepareRestore):
// the meta range and the backup's ranges, with the backup's bounds and
// keys but new range ids above every id of the backed-up cluster, so
// that session tokens and watch cursors from before the restore name
// ranges the restored cluster never had, and are refused
// (checkRestoredRanges) rather than taken for a split's.

// Meta keys of this file (see meta.go for the others).
const (
	// metaClusterID holds version(0, 0) + the cluster id, written once:
	// OpPutIfNewer never replaces a value of the same version, so the
	// first id stored is the cluster's for good.
	metaClusterID = "cluster-id"
	// metaRestored holds version(0, 0) + restoreInfo in a cluster a
	// restore created.
	metaRestored = "restored"
)

// restoreInfo is what a restored cluster remembers of its backup.
type restoreInfo struct {
	FromCluster string    `json:"from_cluster"`
	BackupTime  time.Time `json:"backup_time"`
	// FirstRangeID is the lowest range id of the restored cluster: every
	// user range id below it belongs to the cluster before the restore.
	FirstRangeID uint64 `json:"first_range_id"`
}

// backupLockWait bounds how long a backup waits for a range's
// transactions to resolve.
const backupLockWait = 10 * time.Second

// backupChunkBytes bounds the keys and values of one BackupRange chunk.
const backupChunkBytes = 1 << 20

// ClusterID returns the cluster's id, creating it on first use: a random
// id stored once in the meta range.
func (n *Node) ClusterID(ctx context.Context) (string, error) {
	if id := n.clusterID.Load(); id != nil {
		return *id, nil
	}
	id, found, err := n.readClusterID(ctx)
	if err != nil {
		return "", err
	}
	if !found {
		var b [16]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand)
		if _, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: []byte(metaClusterID), Value: append(version(0, 0), hex.EncodeToString(b[:])...)}); err != nil {
			return "", fmt.Errorf("replication: store the cluster id: %w", err)
		}
		// Another node may have stored one first; its id is the one.
		if id, found, err = n.readClusterID(ctx); err != nil {
			return "", err
		}
		if !found {
			return "", errors.New("replication: the cluster id was stored but cannot be read back")
		}
	}
	n.clusterID.Store(&id)
	return id, nil
}

func (n *Node) readClusterID(ctx context.Context) (string, bool, error) {
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte(metaClusterID)})
	if err != nil {
		return "", false, fmt.Errorf("replication: read the cluster id: %w", err)
	}
	for _, kv := range resp.Kvs {
		if _, _, body, ok := parseVersion(kv.Value); ok && string(kv.Key) == metaClusterID {
			return string(body), true, nil
		}
	}
	return "", false, nil
}

// statusClusterID is the cluster id for Status: best effort and quick, so
// that a node whose meta range is unavailable still reports itself.
func (n *Node) statusClusterID(ctx context.Context) string {
	if id := n.clusterID.Load(); id != nil {
		return *id
	}
	if hops(ctx) > 0 {
		return "" // a peer's ping: no meta round trip
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	id, err := n.ClusterID(ctx)
	if err != nil {
		n.log.Debug("cluster id not known yet", "err", err)
	}
	return id
}

// restored returns what the meta range records of the restore that
// created the cluster, if one did.
func (n *Node) restored(ctx context.Context) (*restoreInfo, error) {
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: []byte(metaRestored)})
	if err != nil {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		if _, _, body, ok := parseVersion(kv.Value); ok && string(kv.Key) == metaRestored {
			var info restoreInfo
			if err := json.Unmarshal(body, &info); err != nil {
				return nil, fmt.Errorf("replication: the meta range's restore record: %w", err)
			}
			return &info, nil
		}
	}
	return nil, nil
}

// checkRestoredRanges refuses a session token's or watch cursor's
// positions (range id: index) that name a range of the cluster before a
// restore. Only ids the node
// cannot place (no replica here, not in its routing table) are looked
// up, so a token of this cluster's ranges costs nothing.
func (n *Node) checkRestoredRanges(ctx context.Context, positions map[uint64]uint64) error {
	var unknown []uint64
	for id := range positions {
		if id == raftstore.MetaRangeID || n.shardByID(id) != nil || n.routes.lists(id) {
			continue
		}
		unknown = append(unknown, id)
	}
	if len(unknown) == 0 {
		return nil
	}
	info, err := n.restored(ctx)
	if err != nil || info == nil {
		return nil // nothing proven: the caller's own checks decide
	}
	for _, id := range unknown {
		if id < info.FirstRangeID {
			return fmt.Errorf("%w: it names range %d, a range of cluster %s before this cluster was restored from its backup of %s; a restore goes back in time, so session tokens and watch cursors from before it are void: start a new session (or watch from now)",
				ErrBadSessionToken, id, info.FromCluster, info.BackupTime.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// lists reports whether the cached routing table names range id.
func (r *routeCache) lists(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table == nil {
		return false
	}
	for _, d := range r.table.Ranges {
		if d.Id == id {
			return true
		}
	}
	return false
}

// BackupRange streams range req.RangeId as one replica holds it at one
// applied index: a first chunk with the range, the index and the cluster
// id, chunks of keys, and a last one with the key count and digest. It
// prefers a follower's replica (this node's, when it has one), so that the
// leader's work is not slowed; any replica will do.
func (n *Node) BackupRange(ctx context.Context, req *kvpb.BackupRangeRequest, send func(*kvpb.BackupRangeChunk) error) error {
	if req.RangeId == raftstore.MetaRangeID {
		return fmt.Errorf("%w: the meta range is not backed up", ErrUnknownRange)
	}
	s := n.shardByID(req.RangeId)
	if s != nil && (!s.IsLeader() || hops(ctx) > 0) {
		return n.backupLocal(ctx, s, send)
	}
	if hops(ctx) >= maxHops {
		return fmt.Errorf("%w: range %d has no replica on %s", ErrUnknownRange, req.RangeId, n.cfg.NodeID)
	}
	targets, err := n.backupTargets(ctx, req.RangeId)
	if err != nil && s == nil {
		return err
	}
	var lastErr error = err
	for _, addr := range targets {
		err := n.backupRemote(ctx, addr, req, send)
		if err == nil {
			return nil
		}
		var sent *sentError
		if errors.As(err, &sent) || ctx.Err() != nil {
			return err // the caller has chunks of that attempt: no silent retry
		}
		lastErr = err
	}
	if s != nil {
		return n.backupLocal(ctx, s, send) // this node leads; no follower answered
	}
	return fmt.Errorf("replication: backup of range %d: no replica answered: %w", req.RangeId, lastErr)
}

// sentError is a remote backup that failed after chunks were passed on.
type sentError struct{ err error }

func (e *sentError) Error() string { return e.err.Error() }
func (e *sentError) Unwrap() error { return e.err }

// backupTargets lists the Raft addresses of range id's other replicas,
// followers first.
func (n *Node) backupTargets(ctx context.Context, id uint64) ([]string, error) {
	for attempt := 0; attempt < 2; attempt++ {
		t, err := n.routes.get(ctx)
		if err != nil {
			return nil, err
		}
		addrs := map[string]string{}
		for _, node := range t.Nodes {
			addrs[node.Id] = node.RaftAddr
		}
		for _, d := range t.Ranges {
			if d.Id != id {
				continue
			}
			var followers, leader []string
			for _, r := range d.Replicas {
				a := addrs[r]
				switch {
				case a == "" || r == n.cfg.NodeID:
				case r == d.Leader:
					leader = append(leader, a)
				default:
					followers = append(followers, a)
				}
			}
			return append(followers, leader...), nil
		}
		n.routes.invalidate()
	}
	return nil, fmt.Errorf("%w: range %d", ErrUnknownRange, id)
}

func (n *Node) backupRemote(ctx context.Context, addr string, req *kvpb.BackupRangeRequest, send func(*kvpb.BackupRangeChunk) error) error {
	conn, err := n.peer(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kvpb.NewClusterClient(conn).BackupRange(forwardContext(ctx), req)
	if err != nil {
		return err
	}
	sent := false
	for range 1 << 40 { // ends with the stream
		c, err := stream.Recv()
		if err == io.EOF {
			if !sent {
				return fmt.Errorf("replication: %s ended the backup stream of range %d without a chunk", addr, req.RangeId)
			}
			return nil
		}
		if err != nil {
			if sent {
				return &sentError{err}
			}
			return err
		}
		if err := send(c); err != nil {
			return &sentError{err}
		}
		sent = true
	}
	return nil
}

// backupLocal streams this node's replica of s, once it has applied what
// its leader had committed and holds no transaction's locks.
func (n *Node) backupLocal(ctx context.Context, s *shard.Shard, send func(*kvpb.BackupRangeChunk) error) error {
	clusterID, err := n.ClusterID(ctx)
	if err != nil {
		return err
	}
	committed, err := n.leaderReadIndex(ctx, s)
	if err != nil {
		return err
	}
	fsm := s.FSM()
	if err := fsm.WaitApplied(ctx, committed); err != nil {
		return fmt.Errorf("%w: range %d on %s did not catch up to index %d: %w", ErrStaleReplica, s.ID(), n.cfg.NodeID, committed, err)
	}
	br, err := n.openBackupUnlocked(ctx, fsm)
	if err != nil {
		return err
	}
	defer br.Close()
	d := br.Descriptor()
	if err := send(&kvpb.BackupRangeChunk{
		Range:        &kvpb.RangeDescriptor{Id: d.ID, Start: d.Start, End: d.End, Generation: d.Generation, Replicas: d.Replicas, Leader: n.cfg.NodeID},
		AppliedIndex: br.Applied(),
		ClusterId:    clusterID,
	}); err != nil {
		return err
	}
	digest := backupfile.NewDigest()
	chunk := &kvpb.BackupRangeChunk{}
	size := 0
	leased, err := br.Each(func(kv raftstore.KV) error {
		digest.Add(kv.Key, kv.Value, kv.Revision)
		chunk.Kvs = append(chunk.Kvs, &kvpb.KeyValue{Key: bytes.Clone(kv.Key), Value: bytes.Clone(kv.Value), Revision: kv.Revision})
		if size += len(kv.Key) + len(kv.Value) + 16; size >= backupChunkBytes {
			if err := send(chunk); err != nil {
				return err
			}
			chunk, size = &kvpb.BackupRangeChunk{}, 0
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	chunk.Last, chunk.Keys, chunk.Sha256 = true, digest.Keys(), digest.Sum()
	if leased > 0 {
		n.log.Info("backup skipped keys attached to leases", "range", d.ID, "leased_keys", leased)
	}
	n.log.Info("range backed up", "range", d.ID, "applied_index", br.Applied(), "keys", digest.Keys())
	return send(chunk)
}

// openBackupUnlocked pins the range's state at a moment it holds no
// transaction locks, waiting for them to resolve up to backupLockWait.
func (n *Node) openBackupUnlocked(ctx context.Context, fsm *raftstore.RangeFSM) (*raftstore.BackupReader, error) {
	ctx, cancel := context.WithTimeout(ctx, backupLockWait)
	defer cancel()
	for attempt := 0; ; attempt++ {
		changed := fsm.Changed()
		br, err := fsm.OpenBackup()
		if err != nil {
			return nil, err
		}
		if br.Locks() == 0 {
			return br, nil
		}
		locks := br.Locks()
		br.Close()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("range %d still held %d transaction locks after %v (%d tries): %w", fsm.ID(), locks, backupLockWait, attempt+1, ctx.Err())
		}
	}
}

// RestoreConfig says what kvd restore prepares.
type RestoreConfig struct {
	// From is the backup: a directory or a .tar file.
	From           string
	NodeID         string
	DataDir        string
	InitialCluster []Peer
	Replicas       int
	Logger         *slog.Logger
}

// PrepareRestore verifies the backup, then creates cfg.DataDir for a
// founding node of a cluster restored from it: the layout a bootstrap
// creates (a meta range), with the backup's ranges in place of the one
// user range. Every founding node runs it with the same backup and
// initial cluster, so all of them create the same ranges with the same
// ids and replicas (placement spreads them once the cluster runs); kvd
// serve with the same flags then starts each range's group from its
// restored state at applied index 0.
//
// It builds the directory beside cfg.DataDir and renames it into place
// last, so a restore interrupted anywhere leaves cfg.DataDir absent and
// a rerun starts over. It refuses a cfg.DataDir that holds anything.
func PrepareRestore(cfg RestoreConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	members := slices.Clone(cfg.InitialCluster)
	slices.SortFunc(members, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	var self *Peer
	for i := range members {
		if members[i].ID == cfg.NodeID {
			self = &members[i]
		}
	}
	switch {
	case cfg.From == "" || cfg.DataDir == "":
		return errors.New("replication: restore needs a backup and a data directory")
	case self == nil:
		return fmt.Errorf("replication: restore: node %q is not in the initial cluster", cfg.NodeID)
	case cfg.Replicas < 1:
		return fmt.Errorf("replication: restore: %d replicas", cfg.Replicas)
	}
	if entries, err := os.ReadDir(cfg.DataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("replication: restore: %s is not empty; a restore creates a data directory, it never writes into one in use", cfg.DataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replication: restore: %w", err)
	}
	m, err := backupfile.Verify(cfg.From)
	if err != nil {
		return fmt.Errorf("replication: restore: the backup failed verification, nothing restored: %w", err)
	}
	tmp := filepath.Clean(cfg.DataDir) + ".restoring"
	if err := os.RemoveAll(tmp); err != nil { // an interrupted run's
		return fmt.Errorf("replication: restore: %w", err)
	}
	if err := writeRestoreDir(tmp, cfg, members, *self, m, log); err != nil {
		return err
	}
	if err := os.Remove(cfg.DataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replication: restore: %w", err)
	}
	if err := os.Rename(tmp, cfg.DataDir); err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	if d, err := os.Open(filepath.Dir(filepath.Clean(cfg.DataDir))); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("replication: restore: %w", err)
		}
	}
	return nil
}

// restoredClusterID derives the restored cluster's id from the backup and
// the founding members, so that every founding node, restoring on its
// own, writes the same one.
func restoredClusterID(m *backupfile.Manifest, members []Peer) string {
	h := sha256.New()
	fmt.Fprintf(h, "restore\x00%s\x00%s\x00", m.ClusterID, m.Created.UTC().Format(time.RFC3339Nano))
	for _, r := range m.Ranges {
		fmt.Fprintf(h, "%d:%s\x00", r.ID, r.SHA256)
	}
	for _, p := range members {
		fmt.Fprintf(h, "%s=%s\x00", p.ID, p.RaftAddr)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func writeRestoreDir(dir string, cfg RestoreConfig, members []Peer, self Peer, m *backupfile.Manifest, log *slog.Logger) error {
	// node.json first: the directory belongs to this node.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	idb, _ := json.Marshal(identity{ID: self.ID, RaftAddr: self.RaftAddr})
	if err := os.WriteFile(filepath.Join(dir, "node.json"), idb, 0o644); err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	scfg := raftstore.DefaultConfig(dir)
	scfg.Logger = log
	store, err := raftstore.Open(scfg)
	if err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	err = restoreRanges(store, cfg, members, m, log)
	if cerr := store.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("replication: restore: %w", cerr)
	}
	return err
}

func restoreRanges(store *raftstore.Store, cfg RestoreConfig, members []Peer, m *backupfile.Manifest, log *slog.Logger) error {
	pick := func(count int) ([]string, []raftstore.Server, bool) {
		var ids []string
		var servers []raftstore.Server
		self := false
		for _, p := range members[:min(count, len(members))] {
			ids = append(ids, p.ID)
			servers = append(servers, raftstore.Server{ID: p.ID, Addr: p.RaftAddr})
			self = self || p.ID == cfg.NodeID
		}
		return ids, servers, self
	}
	// New ids above every id of the backed-up cluster (ranges only split,
	// so the highest id backed up is the highest it had).
	first := uint64(0)
	for _, r := range m.Ranges {
		first = max(first, r.ID+1)
	}
	first = max(first, firstUserRangeID)
	ids, servers, member := pick(max(cfg.Replicas, 3))
	if member {
		info, _ := json.Marshal(restoreInfo{FromCluster: m.ClusterID, BackupTime: m.Created, FirstRangeID: first})
		// allocRangeID hands out the counter's next value plus
		// firstUserRangeID: the next split gets the id after the last
		// restored range.
		counter := first + uint64(len(m.Ranges)) - 1 - firstUserRangeID
		metaKVs := []raftstore.RestoredKV{ // in key order
			{Key: []byte(metaClusterID), Value: append(version(0, 0), restoredClusterID(m, members)...)},
			{Key: []byte(metaNextRangeID), Value: binary.BigEndian.AppendUint64(nil, counter)},
			{Key: []byte(metaRestored), Value: append(version(0, 0), info...)},
		}
		desc := raftstore.Descriptor{ID: raftstore.MetaRangeID, Generation: 1, Replicas: ids}
		if err := store.CreateRestoredRange(desc, servers, backupfile.RestoredRevision, sliceKVs(metaKVs)); err != nil {
			return fmt.Errorf("replication: restore: %w", err)
		}
	}
	ids, servers, member = pick(cfg.Replicas)
	newID := map[uint64]uint64{}
	for i, r := range m.Ranges {
		newID[r.ID] = first + uint64(i)
	}
	_, err := backupfile.Read(cfg.From, func(_ *backupfile.Manifest, r *backupfile.Range, recs *backupfile.RecordReader) error {
		if !member {
			return nil
		}
		desc := raftstore.Descriptor{ID: newID[r.ID], Start: r.Start, End: r.End, Generation: 1, Replicas: ids}
		next := func() (raftstore.RestoredKV, bool, error) {
			rec, err := recs.Next()
			if err == io.EOF {
				return raftstore.RestoredKV{}, false, nil
			}
			return raftstore.RestoredKV{Key: rec.Key, Value: rec.Value}, err == nil, err
		}
		if err := store.CreateRestoredRange(desc, servers, backupfile.RestoredRevision, next); err != nil {
			return err
		}
		log.Info("range restored", "backup_range", r.ID, "range", desc.ID, "keys", r.Keys)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	return nil
}

// sliceKVs yields kvs one by one.
func sliceKVs(kvs []raftstore.RestoredKV) func() (raftstore.RestoredKV, bool, error) {
	return func() (raftstore.RestoredKV, bool, error) {
		if len(kvs) == 0 {
			return raftstore.RestoredKV{}, false, nil
		}
		kv := kvs[0]
		kvs = kvs[1:]
		return kv, true, nil
	}
}
