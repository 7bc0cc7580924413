package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// APIs a client op can go through.
const (
	APIGRPC = "grpc"
	APIHTTP = "http"
)

// Conns talks to every node of a cluster over both APIs, one attempt per
// operation, to exactly the node asked: no retries, no failover, so the
// history says which node answered what. Safe for concurrent use.
type Conns struct {
	ids   []string
	urls  []string
	grpc  []*grpc.ClientConn
	kv    []kvpb.KVClient
	httpc *http.Client
}

// DialCluster connects to c's nodes (with TLS, as RootUser).
func DialCluster(c *Cluster) (*Conns, error) { return dialCluster(c, RootUser) }

// dialCluster connects to c's nodes, with TLS presenting user's client
// certificate.
func dialCluster(c *Cluster, user string) (*Conns, error) {
	tc, err := c.opts.clientTLS(user)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cs := &Conns{httpc: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		TLSClientConfig:     tc,
	}}}
	for i, a := range c.GRPCAddrs() {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(creds))
		if err != nil {
			cs.Close()
			return nil, err
		}
		cs.ids = append(cs.ids, c.ID(i))
		cs.urls = append(cs.urls, c.URL(i))
		cs.grpc = append(cs.grpc, cc)
		cs.kv = append(cs.kv, kvpb.NewKVClient(cc))
	}
	return cs, nil
}

// Close closes every connection.
func (cs *Conns) Close() {
	for _, cc := range cs.grpc {
		cc.Close()
	}
	cs.httpc.CloseIdleConnections()
}

// Request is one operation to perform.
type Request struct {
	Node         int
	API          string
	F            string // put, get, cas, add, scan (append is a cas)
	Key          string
	Value        string
	Expected     string // cas: "" means the key must be absent
	Level        string
	MaxStaleness time.Duration
	Session      string
	Timeout      time.Duration
	// AllPages: a scan follows every page (only for a quiescent cluster:
	// pages are separate snapshots).
	AllPages bool
}

// maxScanPage is the server's largest scan page.
const maxScanPage = 10000

// prefixEnd is the first key after every key with prefix p.
func prefixEnd(p string) []byte {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}

// reply is what came back, already classified.
type reply struct {
	typ         string
	err         string
	value       string
	missing     bool
	elements    []string
	servedBy    string
	rangeID     uint64
	applied     uint64
	revision    uint64
	stalenessMs *int64
	session     string
}

// Do performs req and returns the op to record (Process, Start and End
// are left to the caller).
func (cs *Conns) Do(req Request) Op {
	op := Op{Node: cs.ids[req.Node], API: req.API, F: req.F, Key: req.Key, Value: req.Value, Level: req.Level}
	if req.F == OpCAS {
		op.Expected = req.Expected
	}
	if req.Level == Bounded {
		op.MaxStaleness = req.MaxStaleness.Milliseconds()
	}
	if req.Level == Session {
		op.SessionIn = req.Session
	}
	var r reply
	if req.API == APIHTTP {
		r = cs.doHTTP(req)
	} else {
		r = cs.doGRPC(req)
	}
	op.Type, op.Error = r.typ, r.err
	op.ServedBy, op.RangeID, op.AppliedIndex, op.Revision, op.StalenessMs, op.SessionOut = r.servedBy, r.rangeID, r.applied, r.revision, r.stalenessMs, r.session
	if req.F == OpGet && r.typ == OK {
		op.Value, op.Missing = r.value, r.missing
	}
	if req.F == OpScan {
		op.Value = ""
		op.Elements = r.elements
	}
	return op
}

func levelPB(l string) kvpb.Consistency {
	switch l {
	case Bounded:
		return kvpb.Consistency_CONSISTENCY_BOUNDED
	case Session:
		return kvpb.Consistency_CONSISTENCY_SESSION
	case Stale:
		return kvpb.Consistency_CONSISTENCY_STALE
	}
	return kvpb.Consistency_CONSISTENCY_LINEARIZABLE
}

// classify turns an error into a result type: reads that error did
// nothing (fail); a write fails only when the error proves it was not
// applied (the client's own rule, rpctypes.NotApplied, which the
// error-honesty checker then holds the server to), else its fate is
// unknown (info).
func classify(write bool, reason rpctypes.Reason, notSent bool) string {
	if !write || notSent || rpctypes.NotApplied(rpctypes.Error(codes.Unknown, reason, "", nil)) {
		return Fail
	}
	return Info
}

func isWriteF(f string) bool { return f == OpPut || f == OpCAS || f == OpAdd }

// ---- gRPC ----

func (cs *Conns) doGRPC(req Request) (r reply) {
	ctx, cancel := context.WithTimeout(context.Background(), req.Timeout)
	defer cancel()
	kv := cs.kv[req.Node]
	ro := &kvpb.ReadOptions{Consistency: levelPB(req.Level), SessionToken: req.Session}
	if req.Level == Bounded {
		ro.MaxStaleness = durationpb.New(req.MaxStaleness)
	}
	var err error
	var p peer.Peer // whether the call reached a transport (rpctypes.NeverSent)
	switch req.F {
	case OpPut, OpAdd:
		var resp *kvpb.PutResponse
		if resp, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte(req.Key), Value: []byte(req.Value)}, grpc.Peer(&p)); err == nil {
			r.writeHeader(resp.GetHeader())
		}
	case OpCAS:
		var resp *kvpb.CompareAndSwapResponse
		creq := &kvpb.CompareAndSwapRequest{Key: []byte(req.Key), NewValue: []byte(req.Value), ExpectedValue: []byte(req.Expected), ExpectMissing: req.Expected == ""}
		if resp, err = kv.CompareAndSwap(ctx, creq, grpc.Peer(&p)); err == nil {
			r.writeHeader(resp.GetHeader())
		}
	case OpGet:
		var resp *kvpb.GetResponse
		if resp, err = kv.Get(ctx, &kvpb.GetRequest{Key: []byte(req.Key), Read: ro}, grpc.Peer(&p)); err == nil {
			r.readHeader(resp.GetHeader())
			r.value, r.revision = string(resp.GetKv().GetValue()), resp.GetKv().GetRevision()
		} else if rpctypes.ReasonOf(err) == rpctypes.ReasonKeyNotFound {
			info := rpctypes.InfoOf(err)
			r.typ, r.missing = OK, true
			r.servedBy = info.GetMetadata()["served_by"]
			r.applied, _ = strconv.ParseUint(info.GetMetadata()["applied_index"], 10, 64)
			r.rangeID, _ = strconv.ParseUint(info.GetMetadata()[rpctypes.MetaRangeID], 10, 64)
			r.session = info.GetMetadata()["session_token"] // when the server sends one
			return r
		}
	case OpScan:
		// One page is one snapshot of one replica; AllPages (for the
		// final, quiescent read) follows the pages.
		sreq := &kvpb.ScanRequest{Start: []byte(req.Key), End: prefixEnd(req.Key), Limit: maxScanPage, Read: ro}
		for {
			var resp *kvpb.ScanResponse
			if resp, err = kv.Scan(ctx, sreq, grpc.Peer(&p)); err != nil {
				break
			}
			r.readHeader(resp.GetHeader())
			for _, e := range resp.GetKvs() {
				r.elements = append(r.elements, string(e.GetKey()))
			}
			if !resp.GetMore() {
				break
			}
			if !req.AllPages {
				err = errors.New("scan: more than one page")
				break
			}
			sreq.Start = resp.GetNextKey()
		}
	}
	if err == nil {
		r.typ = OK
		return r
	}
	reason := rpctypes.ReasonOf(err)
	st, _ := status.FromError(err)
	// A call that never reached a server (dial failed) was not applied.
	r.typ = classify(isWriteF(req.F), reason, rpctypes.NeverSent(err, &p))
	r.err = fmt.Sprintf("%v %s: %s", st.Code(), reason, truncate(st.Message(), 160))
	return r
}

func (r *reply) writeHeader(h *kvpb.WriteHeader) {
	r.servedBy, r.rangeID, r.revision, r.session = h.GetServedBy(), h.GetRangeId(), h.GetRevision(), h.GetSessionToken()
}

func (r *reply) readHeader(h *kvpb.ReadHeader) {
	r.servedBy, r.rangeID, r.applied, r.session = h.GetServedBy(), h.GetRangeId(), h.GetAppliedIndex(), h.GetSessionToken()
	s := h.GetStalenessMs()
	r.stalenessMs = &s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ---- HTTP ----

func (cs *Conns) doHTTP(req Request) (r reply) {
	ctx, cancel := context.WithTimeout(context.Background(), req.Timeout)
	defer cancel()
	q := url.Values{}
	// The server answers (with a reason) a little before the client gives up.
	q.Set("timeout", max(req.Timeout-200*time.Millisecond, 100*time.Millisecond).String())
	var method, path string
	var body []byte
	switch req.F {
	case OpPut, OpAdd:
		method, path, body = http.MethodPut, "/v1/kv/"+url.PathEscape(req.Key), []byte(req.Value)
	case OpCAS:
		m := map[string]any{"value": req.Value}
		if req.Expected == "" {
			m["expect_missing"] = true
		} else {
			m["expected"] = req.Expected
		}
		body, _ = json.Marshal(m)
		method, path = http.MethodPost, "/v1/cas/"+url.PathEscape(req.Key)
	case OpGet, OpScan:
		q.Set("consistency", req.Level)
		if req.Level == Bounded {
			q.Set("max_staleness", req.MaxStaleness.String())
		}
		method, path = http.MethodGet, "/v1/kv/"+url.PathEscape(req.Key)
		if req.F == OpScan {
			path = "/v1/scan"
			q.Set("prefix", req.Key)
			q.Set("limit", strconv.Itoa(maxScanPage))
		}
	}
	hreq, err := http.NewRequestWithContext(ctx, method, cs.urls[req.Node]+path+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		r.typ, r.err = Fail, err.Error()
		return r
	}
	if req.Level == Session && req.Session != "" {
		hreq.Header.Set("X-Dialkv-Session", req.Session)
	}
	resp, err := cs.httpc.Do(hreq)
	if err != nil {
		// A failed dial: the request never left. A reset after it was
		// written leaves a write indeterminate.
		r.typ = classify(isWriteF(req.F), "", rpctypes.NeverSentHTTP(hreq, err))
		r.err = "http: " + truncate(err.Error(), 160)
		return r
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		r.typ = classify(isWriteF(req.F), "", false)
		r.err = "http: reading body: " + err.Error()
		return r
	}
	h := resp.Header
	reason := rpctypes.Reason(h.Get("X-Dialkv-Reason"))
	r.servedBy = h.Get("X-Dialkv-Served-By")
	r.rangeID, _ = strconv.ParseUint(h.Get("X-Dialkv-Range"), 10, 64)
	r.applied, _ = strconv.ParseUint(h.Get("X-Dialkv-Applied-Index"), 10, 64)
	r.revision, _ = strconv.ParseUint(h.Get("X-Dialkv-Revision"), 10, 64)
	r.session = h.Get("X-Dialkv-Session")
	if s := h.Get("X-Dialkv-Staleness-Ms"); s != "" {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			r.stalenessMs = &v
		}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		r.typ = OK
		switch req.F {
		case OpGet:
			r.value = string(data)
		case OpScan:
			var page struct {
				KVs []struct {
					Key string `json:"key"`
				} `json:"kvs"`
				More         bool   `json:"more"`
				ServedBy     string `json:"served_by"`
				RangeID      uint64 `json:"range_id"`
				AppliedIndex uint64 `json:"applied_index"`
			}
			if err := json.Unmarshal(data, &page); err != nil || page.More {
				r.typ, r.err = Fail, fmt.Sprintf("scan: %v more=%v", err, page.More)
				return r
			}
			for _, kv := range page.KVs {
				r.elements = append(r.elements, kv.Key)
			}
			r.servedBy, r.rangeID, r.applied = page.ServedBy, page.RangeID, page.AppliedIndex
		}
	case resp.StatusCode == http.StatusNotFound && req.F == OpGet && reason == rpctypes.ReasonKeyNotFound:
		r.typ, r.missing, r.revision = OK, true, 0
	default:
		r.typ = classify(isWriteF(req.F), reason, false)
		r.err = fmt.Sprintf("%d %s: %s", resp.StatusCode, reason, truncate(strings.TrimSpace(string(data)), 160))
	}
	return r
}

// ---- sessions ----

// mergeTokens carries a session forward: the per-range maximum of two
// session tokens ("1:1042,7:88"), rpctypes.MergeSessionTokens. A token
// that does not parse leaves the session as it was; the history keeps the
// token as the op's SessionOut.
func mergeTokens(session, answer string) string {
	merged, err := rpctypes.MergeSessionTokens(session, answer)
	if err != nil {
		return session
	}
	return merged
}

// ---- the generator ----

// WorkloadConfig shapes the clients' operations.
type WorkloadConfig struct {
	// RegisterKeys live registerLifetime each, then the clients move on to
	// fresh keys, so that every key's history stays short enough for the
	// linearizability checker.
	RegisterKeys     int
	RegisterLifetime time.Duration
	ListKeys         int
	ListLifetime     time.Duration
	// ThinkTime is the mean pause between a client's operations.
	ThinkTime time.Duration
	OpTimeout time.Duration
	// Canary: this fraction of the reads recorded as linearizable are in
	// fact sent as stale (a deliberately lying client).
	Canary float64
}

func (w *WorkloadConfig) setDefaults() {
	if w.RegisterKeys == 0 {
		w.RegisterKeys = 12
	}
	if w.RegisterLifetime == 0 {
		w.RegisterLifetime = 20 * time.Second
	}
	if w.ListKeys == 0 {
		w.ListKeys = 4
	}
	if w.ListLifetime == 0 {
		w.ListLifetime = 30 * time.Second
	}
	if w.ThinkTime == 0 {
		w.ThinkTime = 15 * time.Millisecond
	}
	if w.OpTimeout == 0 {
		w.OpTimeout = 2 * time.Second
	}
}

// maxStalenesses are the bounds bounded reads ask for.
var maxStalenesses = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// shared is what the clients know together: the latest value seen per
// key, to make compare-and-swap guesses that often succeed.
type shared struct {
	mu     sync.Mutex
	latest map[string]string
}

func (s *shared) get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.latest[key]
	return v, ok
}

func (s *shared) set(key, v string) {
	s.mu.Lock()
	s.latest[key] = v
	s.mu.Unlock()
}

// worker is one client: sequential, with its own session.
type worker struct {
	id      int
	rng     *rand.Rand
	cs      *Conns
	rec     *Recorder
	cfg     WorkloadConfig
	shared  *shared
	session string
	seq     int
	nodes   int
}

func (w *worker) nextValue() string {
	w.seq++
	return fmt.Sprintf("c%d-%d", w.id, w.seq)
}

// do performs req, records it and carries the session token forward.
func (w *worker) do(req Request, planted bool) Op {
	req.Timeout = w.cfg.OpTimeout
	start := w.rec.Now()
	op := w.cs.Do(req)
	op.Start, op.End, op.Process = start, w.rec.Now(), w.id
	if planted {
		op.Level, op.Planted, op.MaxStaleness = Linearizable, true, 0
	}
	w.rec.Add(op)
	if op.Type == OK && op.SessionOut != "" {
		w.session = mergeTokens(w.session, op.SessionOut)
	}
	return op
}

func (w *worker) pick(levels []string) string { return levels[w.rng.IntN(len(levels))] }

// step performs one randomly chosen operation.
func (w *worker) step() {
	node := w.rng.IntN(w.nodes)
	api := APIGRPC
	if w.rng.IntN(2) == 0 {
		api = APIHTTP
	}
	now := time.Duration(w.rec.Now())
	regKey := fmt.Sprintf("%s%04d/%02d", RegisterPrefix, int(now/w.cfg.RegisterLifetime), w.rng.IntN(w.cfg.RegisterKeys))
	listKey := fmt.Sprintf("%s%04d/%02d", ListPrefix, int(now/w.cfg.ListLifetime), w.rng.IntN(w.cfg.ListKeys))
	// The set, too, moves to a fresh prefix from time to time, so that a
	// scan stays one page.
	setGen := fmt.Sprintf("%s%04d/", SetPrefix, int(now/w.cfg.ListLifetime))
	req := Request{Node: node, API: api}
	switch p := w.rng.IntN(100); {
	case p < 38: // register read
		w.read(req, regKey)
	case p < 55: // register put
		req.F, req.Key, req.Value = OpPut, regKey, w.nextValue()
		if op := w.do(req, false); op.Type == OK {
			w.shared.set(regKey, req.Value)
		}
	case p < 65: // register cas
		exp, _ := w.shared.get(regKey)
		req.F, req.Key, req.Value, req.Expected = OpCAS, regKey, w.nextValue(), exp
		if op := w.do(req, false); op.Type == OK {
			w.shared.set(regKey, req.Value)
		}
	case p < 75: // list read
		w.read(req, listKey)
	case p < 87: // list append: read, then compare-and-swap
		w.append(req, listKey)
	case p < 98: // set add
		v := fmt.Sprintf("%s%d/%d", setGen, w.id, w.seq+1)
		w.seq++
		req.F, req.Key, req.Value = OpAdd, v, v
		w.do(req, false)
	default: // set scan of the current generation
		req.F, req.Key = OpScan, setGen
		req.Level = w.pick(Levels)
		w.withLevel(&req)
		w.do(req, false)
	}
}

// withLevel fills in the level's parameters.
func (w *worker) withLevel(req *Request) bool {
	planted := false
	switch req.Level {
	case Bounded:
		req.MaxStaleness = maxStalenesses[w.rng.IntN(len(maxStalenesses))]
	case Session:
		req.Session = w.session
	case Linearizable:
		if w.cfg.Canary > 0 && w.rng.Float64() < w.cfg.Canary {
			req.Level, planted = Stale, true
		}
	}
	return planted
}

func (w *worker) read(req Request, key string) Op {
	req.F, req.Key, req.Level = OpGet, key, w.pick(Levels)
	planted := w.withLevel(&req)
	op := w.do(req, planted)
	if op.Type == OK && !op.Missing && req.Level == Linearizable {
		w.shared.set(key, op.Value)
	}
	return op
}

// append adds a fresh element to a list: a linearizable read of the list
// (recorded), then a compare-and-swap from what was read.
func (w *worker) append(req Request, key string) {
	rd := req
	rd.F, rd.Key, rd.Level = OpGet, key, Linearizable
	cur := w.do(rd, false)
	if cur.Type != OK {
		return
	}
	elem := w.nextValue()
	req.F, req.Key, req.Expected, req.Value = OpCAS, key, cur.Value, appendValue(cur.Value, elem)
	req.Timeout = w.cfg.OpTimeout
	start := w.rec.Now()
	op := w.cs.Do(req)
	op.Start, op.End, op.Process = start, w.rec.Now(), w.id
	op.F, op.Value = OpAppend, elem // recorded as the element appended to Expected
	w.rec.Add(op)
	if op.Type == OK && op.SessionOut != "" {
		w.session = mergeTokens(w.session, op.SessionOut)
	}
}

// run issues operations until ctx is done.
func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.step()
		if w.cfg.ThinkTime > 0 {
			d := time.Duration(w.rng.Int64N(int64(2 * w.cfg.ThinkTime)))
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
}
