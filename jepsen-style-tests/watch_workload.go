package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
)

// Workload names (Config.Workloads, jepsen --workloads).
const (
	// WorkloadRegister is the original workload: registers, lists, sets
	// and reads at every level (workload.go).
	WorkloadRegister = "register"
	// WorkloadWatch: writers under WatchPrefix, watchers on it.
	WorkloadWatch = "watch"
	// WorkloadLease: leases with keys under LeasePrefix, and a watcher on it.
	WorkloadLease = "lease"
)

// WorkloadNames lists the workloads in the order they are described.
var WorkloadNames = []string{WorkloadRegister, WorkloadWatch, WorkloadLease, WorkloadBank, WorkloadAppend}

// ParseWorkloads checks a list of workload names; empty means register
// alone, as before workloads could be chosen.
func ParseWorkloads(names []string) ([]string, error) {
	if len(names) == 0 {
		return []string{WorkloadRegister}, nil
	}
	var out []string
	for _, n := range names {
		known := false
		for _, k := range WorkloadNames {
			known = known || n == k
		}
		if !known {
			return nil, fmt.Errorf("jepsen: unknown workload %q (want a comma list of %s)", n, strings.Join(WorkloadNames, ", "))
		}
		out = append(out, n)
	}
	return out, nil
}

func hasWorkload(list []string, name string) bool {
	for _, n := range list {
		if n == name {
			return true
		}
	}
	return false
}

// WatchPrefix holds the watch workload's keys: written by its writers,
// watched by its watchers, touched by nothing else.
const WatchPrefix = "w/"

// Operation kinds of the watch workload. Its writes are kinds of their
// own, not OpPut, so that the register checkers leave them alone.
const (
	OpWatchPut = "wput" // put Value to Key (gRPC, with the write header)
	OpWatchCAS = "wcas" // compare-and-swap Key from Expected to Value
	// OpWatchDelete deletes Key; Missing: the server said the key did not
	// exist, so no event is promised.
	OpWatchDelete = "wdel"
	// OpWatch: a watch stream was opened on prefix Key, resuming after
	// From ("" is "from now"); ok when its first message came (Cursor is
	// the cursor it starts from), fail when none did.
	OpWatch = "watch"
	// OpWatchMsg: a message of the stream: its Cursor and Events. Progress
	// messages are recorded only when they move the cursor.
	OpWatchMsg = "watch-msg"
	// OpWatchEnd: the stream ended: the server's error, or the watcher
	// cut it (stalled, or at the end of its random lifetime).
	OpWatchEnd = "watch-end"
	// OpWatchCompacted: the stream ended with COMPACTED; the next watch
	// starts from now, and the checker checks each side on its own.
	OpWatchCompacted = "watch-compacted"
)

// WatcherProcess numbers the watchers' processes: watcher i is
// WatcherProcess - i. Like the nemesis's, they are not clients: the
// availability tables and the auth checker leave their ops out.
const WatcherProcess = -100

// WatchEvent is one event a watcher received.
type WatchEvent struct {
	Type  string `json:"type"` // "put" or "delete"
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
	Range uint64 `json:"range"`
	Index uint64 `json:"index"`
	// Cause and Lease: a delete caused by a lease (LEASE_EXPIRED,
	// LEASE_REVOKED) and that lease; Lease also on a put with a lease.
	Cause string `json:"cause,omitempty"`
	Lease int64  `json:"lease,omitempty"`
}

// Event types as recorded.
const (
	EventPut    = "put"
	EventDelete = "delete"
)

// WatchConfig shapes the watch workload.
type WatchConfig struct {
	// Watchers on WatchPrefix (default 2) and Writers writing under it
	// (default 2) over Keys keys (default 16).
	Watchers int
	Writers  int
	Keys     int
	// ProgressInterval is asked of the server (default 250ms). A stream
	// without a message for StallTimeout (default 3s) is given up and
	// resumed elsewhere; every stream is cut after a random time up to
	// MaxStream (default 10s), so that resumes happen in healthy periods
	// too.
	ProgressInterval time.Duration
	StallTimeout     time.Duration
	MaxStream        time.Duration
	// CatchUp bounds the wait, after the heal, for every watcher to
	// deliver every acknowledged write (default 30s).
	CatchUp time.Duration
	// RetentionBytes, when set, is every node's --watch-retention-bytes:
	// small, it makes ranges trim their feeds during the run, so that
	// resumes meet COMPACTED and the checker's segments start afresh.
	RetentionBytes int64
}

func (w *WatchConfig) setDefaults() {
	if w.Watchers == 0 {
		w.Watchers = 2
	}
	if w.Writers == 0 {
		w.Writers = 2
	}
	if w.Keys == 0 {
		w.Keys = 16
	}
	if w.ProgressInterval == 0 {
		w.ProgressInterval = 250 * time.Millisecond
	}
	if w.StallTimeout == 0 {
		w.StallTimeout = 3 * time.Second
	}
	if w.MaxStream == 0 {
		w.MaxStream = 10 * time.Second
	}
	if w.CatchUp == 0 {
		w.CatchUp = 30 * time.Second
	}
}

// write performs one put (with a lease when lease is not 0), compare-and-
// swap or delete over gRPC to exactly node, and returns the op to record
// (Process, Start and End are the caller's). f is the kind recorded:
// OpWatchPut or OpLeasePut (puts), OpWatchCAS, OpWatchDelete.
func (cs *Conns) write(node int, f, key, value, expected string, lease int64, timeout time.Duration) Op {
	op := Op{Node: cs.ids[node], API: APIGRPC, F: f, Key: key, Value: value, Lease: lease}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	kv := cs.kv[node]
	var p peer.Peer
	var h *kvpb.WriteHeader
	var err error
	switch f {
	case OpWatchCAS:
		op.Expected = expected
		var resp *kvpb.CompareAndSwapResponse
		resp, err = kv.CompareAndSwap(ctx, &kvpb.CompareAndSwapRequest{Key: []byte(key), ExpectedValue: []byte(expected), ExpectMissing: expected == "", NewValue: []byte(value)}, grpc.Peer(&p))
		h = resp.GetHeader()
	case OpWatchDelete:
		var resp *kvpb.DeleteResponse
		resp, err = kv.Delete(ctx, &kvpb.DeleteRequest{Key: []byte(key)}, grpc.Peer(&p))
		h = resp.GetHeader()
		op.Missing = err == nil && !resp.GetDeleted()
	default:
		var resp *kvpb.PutResponse
		resp, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(value), Lease: lease}, grpc.Peer(&p))
		h = resp.GetHeader()
	}
	if err == nil {
		op.Type = OK
		op.ServedBy, op.RangeID, op.Revision = h.GetServedBy(), h.GetRangeId(), h.GetRevision()
		return op
	}
	st, _ := status.FromError(err)
	reason := rpctypes.ReasonOf(err)
	op.Type = classify(true, reason, rpctypes.NeverSent(err, &p))
	if reason == reasonLeaseNotFound {
		op.Type = Fail // the lease was not alive: the put was refused
	}
	op.Error = fmt.Sprintf("%v %s: %s", st.Code(), reason, truncate(st.Message(), 160))
	return op
}

// watchWriter writes under WatchPrefix: puts and compare-and-swaps of
// unique values, and deletes.
type watchWriter struct {
	proc    int
	rng     *rand.Rand
	cs      *Conns
	rec     *Recorder
	cfg     WatchConfig
	timeout time.Duration
	think   time.Duration
	seq     int
	// last is the value this writer last wrote per key, a guess for its
	// compare-and-swaps.
	last map[string]string
}

func (w *watchWriter) run(ctx context.Context) {
	for ctx.Err() == nil {
		node := w.rng.IntN(len(w.cs.ids))
		key := fmt.Sprintf("%s%02d", WatchPrefix, w.rng.IntN(w.cfg.Keys))
		w.seq++
		value := fmt.Sprintf("w%d-%d", w.proc, w.seq)
		start := w.rec.Now()
		var op Op
		switch p := w.rng.IntN(100); {
		case p < 55:
			op = w.cs.write(node, OpWatchPut, key, value, "", 0, w.timeout)
		case p < 80:
			op = w.cs.write(node, OpWatchCAS, key, value, w.last[key], 0, w.timeout)
		default:
			op = w.cs.write(node, OpWatchDelete, key, "", "", 0, w.timeout)
		}
		op.Start, op.End, op.Process = start, w.rec.Now(), w.proc
		w.rec.Add(op)
		if op.Type == OK {
			w.last[key] = op.Value
		}
		sleepCtx(ctx, time.Duration(w.rng.Int64N(int64(2*w.think)+1)))
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Cursor is a watch cursor: per range, the index up to which every event
// has been delivered ("7:120,9:44"). Unlike a session token it keeps
// entries at index 0: a range the watch covers with nothing yet.
type Cursor map[uint64]uint64

// ParseCursor parses a cursor's text ("" is the empty cursor).
func ParseCursor(s string) (Cursor, error) {
	c := Cursor{}
	if s == "" {
		return c, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		r, i, ok := strings.Cut(part, ":")
		id, err1 := strconv.ParseUint(r, 10, 64)
		idx, err2 := strconv.ParseUint(i, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("jepsen: cursor entry %q: want RANGE:INDEX", part)
		}
		c[id] = max(c[id], idx)
	}
	return c, nil
}

// covers reports whether the cursor has delivered index idx of range r.
func (c Cursor) covers(r, idx uint64) bool {
	have, ok := c[r]
	return ok && have >= idx
}

type rangeIndex struct{ r, i uint64 }

// reasonCompacted and reasonLeaseNotFound are the server's reasons for a
// watch cursor past retention and a lease that is not alive.
const (
	reasonCompacted     rpctypes.Reason = "COMPACTED"
	reasonLeaseNotFound rpctypes.Reason = "LEASE_NOT_FOUND"
)

// watcher watches one prefix for the whole run, resuming from its last
// cursor through a random node whenever a stream ends.
type watcher struct {
	proc   int
	prefix string
	rng    *rand.Rand
	cs     *Conns
	rec    *Recorder
	cfg    WatchConfig

	mu     sync.Mutex
	cursor string
	parsed Cursor
	seen   map[rangeIndex]bool
}

func (w *watcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.stream(ctx)
		sleepCtx(ctx, time.Duration(50+w.rng.IntN(200))*time.Millisecond)
	}
}

// stream runs one watch stream to its end and records it.
func (w *watcher) stream(ctx context.Context) {
	node := w.rng.IntN(len(w.cs.ids))
	w.mu.Lock()
	from := w.cursor
	w.mu.Unlock()
	life := w.cfg.MaxStream/2 + time.Duration(w.rng.Int64N(int64(w.cfg.MaxStream/2)+1))
	sctx, cancel := context.WithTimeout(ctx, life)
	defer cancel()
	var stalled atomic.Bool
	stall := time.AfterFunc(w.cfg.StallTimeout, func() { stalled.Store(true); cancel() })
	defer stall.Stop()
	start := w.rec.Now()
	base := Op{Process: w.proc, Node: w.cs.ids[node], API: APIGRPC, Key: w.prefix}
	stream, err := w.cs.kv[node].Watch(sctx, &kvpb.WatchRequest{Prefix: []byte(w.prefix), From: from, ProgressInterval: durationpb.New(w.cfg.ProgressInterval)})
	first := true
	last := from
	for err == nil {
		var msg *kvpb.WatchResponse
		if msg, err = stream.Recv(); err != nil {
			break
		}
		now := w.rec.Now()
		stall.Reset(w.cfg.StallTimeout)
		if first {
			first = false
			op := base
			op.F, op.From, op.Cursor, op.Start, op.End, op.Type = OpWatch, from, msg.GetCursor(), start, now, OK
			w.rec.Add(op)
		}
		evs := make([]WatchEvent, 0, len(msg.GetEvents()))
		for _, e := range msg.GetEvents() {
			evs = append(evs, watchEvent(e))
		}
		if len(evs) > 0 || msg.GetCursor() != last {
			op := base
			op.Key = ""
			op.F, op.Cursor, op.Events, op.Start, op.End, op.Type = OpWatchMsg, msg.GetCursor(), evs, now, now, OK
			w.rec.Add(op)
		}
		c, perr := ParseCursor(msg.GetCursor())
		w.mu.Lock()
		if perr == nil {
			w.cursor, w.parsed, last = msg.GetCursor(), c, msg.GetCursor()
		}
		for _, e := range evs {
			w.seen[rangeIndex{e.Range, e.Index}] = true
		}
		w.mu.Unlock()
	}
	now := w.rec.Now()
	op := base
	op.Start, op.End, op.Cursor = start, now, last
	st, _ := status.FromError(err)
	switch {
	case rpctypes.ReasonOf(err) == reasonCompacted || st.Code() == codes.OutOfRange:
		op.F, op.Type, op.Error = OpWatchCompacted, Fail, fmt.Sprintf("%v %s: %s", st.Code(), rpctypes.ReasonOf(err), truncate(st.Message(), 160))
		w.mu.Lock()
		w.cursor, w.parsed = "", Cursor{} // from now
		w.mu.Unlock()
		if first {
			op.From = from
		}
	case first:
		op.F, op.Type, op.From = OpWatch, Fail, from
		op.Error = fmt.Sprintf("%v %s: %s", st.Code(), rpctypes.ReasonOf(err), truncate(st.Message(), 160))
	default:
		op.F, op.Type = OpWatchEnd, Info
		switch {
		case ctx.Err() != nil:
			op.Error = "the watcher stopped"
		case stalled.Load():
			op.Error = fmt.Sprintf("no message for %v: resuming elsewhere", w.cfg.StallTimeout)
		case errors.Is(sctx.Err(), context.DeadlineExceeded):
			op.Error = fmt.Sprintf("cut by the watcher after %v", life.Round(time.Millisecond))
		default:
			op.Error = fmt.Sprintf("%v %s: %s", st.Code(), rpctypes.ReasonOf(err), truncate(st.Message(), 160))
		}
	}
	w.rec.Add(op)
}

func watchEvent(e *kvpb.Event) WatchEvent {
	we := WatchEvent{Type: EventPut, Key: string(e.GetKey()), Value: string(e.GetValue()), Range: e.GetRangeId(), Index: e.GetIndex(), Lease: e.GetLease()}
	if e.GetType() == kvpb.EventType_EVENT_TYPE_DELETE {
		we.Type = EventDelete
	}
	switch e.GetCause() {
	case kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED:
		we.Cause = CauseLeaseExpired
	case kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED:
		we.Cause = CauseLeaseRevoked
	}
	return we
}

// Delete causes as recorded.
const (
	CauseLeaseExpired = "LEASE_EXPIRED"
	CauseLeaseRevoked = "LEASE_REVOKED"
)

// watchSet runs the watchers of a run (on WatchPrefix, and on LeasePrefix
// with the lease workload) and the watch workload's writers.
type watchSet struct {
	watchers []*watcher
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	rec      *Recorder
	cfg      WatchConfig
}

// startWatchers starts one watcher per prefix; they run until finish.
func startWatchers(cs *Conns, rec *Recorder, cfg WatchConfig, seed uint64, prefixes []string) *watchSet {
	ctx, cancel := context.WithCancel(context.Background())
	ws := &watchSet{cancel: cancel, rec: rec, cfg: cfg}
	for i, p := range prefixes {
		w := &watcher{proc: WatcherProcess - i, prefix: p, rng: rand.New(rand.NewPCG(seed, uint64(1000+i))), cs: cs, rec: rec, cfg: cfg, parsed: Cursor{}, seen: map[rangeIndex]bool{}}
		ws.watchers = append(ws.watchers, w)
		ws.wg.Go(func() { w.run(ctx) })
	}
	return ws
}

// watchTargets are, per watched prefix, the highest index per range the
// watcher must have delivered: every acknowledged write's revision, and
// the applied index of every final read of a lease key (which the
// lease's deletes precede).
func watchTargets(h *History, prefix string) map[uint64]uint64 {
	out := map[uint64]uint64{}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Type != OK || !strings.HasPrefix(o.Key, prefix) || o.RangeID == 0 {
			continue
		}
		switch {
		case (o.F == OpWatchPut || o.F == OpWatchCAS || o.F == OpLeasePut) || (o.F == OpWatchDelete && !o.Missing):
			out[o.RangeID] = max(out[o.RangeID], o.Revision)
		case o.F == OpLeaseGet && o.Process == FinalProcess:
			out[o.RangeID] = max(out[o.RangeID], o.AppliedIndex)
		}
	}
	return out
}

// finish waits, after the heal, until every watcher has delivered
// everything up to its targets (or cfg.CatchUp passed), then stops them.
func (ws *watchSet) finish(ctx context.Context, logf func(string, ...any)) {
	h := ws.rec.History()
	targets := map[string]map[uint64]uint64{}
	for _, w := range ws.watchers {
		if targets[w.prefix] == nil {
			targets[w.prefix] = watchTargets(h, w.prefix)
		}
	}
	behind := func() []string {
		var out []string
		for _, w := range ws.watchers {
			w.mu.Lock()
			for r, idx := range targets[w.prefix] {
				if !w.parsed.covers(r, idx) && !w.seen[rangeIndex{r, idx}] {
					out = append(out, fmt.Sprintf("watcher %d (%s) at range %d: %d < %d", w.proc, w.prefix, r, w.parsed[r], idx))
				}
			}
			w.mu.Unlock()
		}
		sort.Strings(out)
		return out
	}
	start := time.Now()
	err := harness.Poll(ctx, ws.cfg.CatchUp, 200*time.Millisecond, func(context.Context) (bool, error) {
		return len(behind()) == 0, nil
	})
	if err != nil {
		b := behind()
		logf("jepsen: watchers not caught up within %v: %d ranges behind, first: %s", ws.cfg.CatchUp, len(b), b[:min(3, len(b))])
	} else {
		logf("jepsen: %d watchers caught up with every acknowledged write in %v", len(ws.watchers), time.Since(start).Round(time.Millisecond))
	}
	ws.stop()
}

// stop ends the watchers and waits for them.
func (ws *watchSet) stop() {
	ws.cancel()
	ws.wg.Wait()
}
