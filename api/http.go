package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/api/ui"
	"github.com/dialkv/dialkv/replication"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// HTTP headers carrying response metadata.
const (
	HeaderServedBy     = "X-Dialkv-Served-By"
	HeaderRange        = "X-Dialkv-Range"
	HeaderApplied      = "X-Dialkv-Applied-Index"
	HeaderConsistency  = "X-Dialkv-Consistency"
	HeaderStaleness    = "X-Dialkv-Staleness-Ms"
	HeaderRevision     = "X-Dialkv-Revision"
	HeaderSession      = "X-Dialkv-Session"
	HeaderReason       = "X-Dialkv-Reason"
	defaultHTTPTimeout = 5 * time.Second
)

// ReadyFunc reports whether the node can serve: nil, or why not.
type ReadyFunc func(context.Context) error

// NewHTTPHandler serves the HTTP/JSON API over svc, plus /healthz,
// /readyz and /metrics from gatherer. Every error it answers, down to an
// unknown path, a wrong method or a malformed query string, is the JSON
// error body with X-Dialkv-Reason (writeError).
func NewHTTPHandler(svc *Service, gatherer prometheus.Gatherer, ready ReadyFunc) http.Handler {
	h := &httpAPI{svc: svc}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/kv/{key...}", h.put)
	mux.HandleFunc("GET /v1/kv/{key...}", h.get)
	mux.HandleFunc("DELETE /v1/kv/{key...}", h.del)
	mux.HandleFunc("POST /v1/cas/{key...}", h.cas)
	mux.HandleFunc("GET /v1/scan", h.scan)
	mux.HandleFunc("GET /v1/watch", h.watch)
	mux.HandleFunc("POST /v1/txn", h.txn)
	mux.HandleFunc("GET /v1/txn/status", h.txnStatus)
	mux.HandleFunc("POST /v1/lease/grant", authRoute(svc.Grant))
	mux.HandleFunc("POST /v1/lease/keepalive", authRoute(svc.keepAlive))
	mux.HandleFunc("POST /v1/lease/revoke", authRoute(svc.Revoke))
	mux.HandleFunc("GET /v1/lease/list", authRoute(svc.List))
	mux.HandleFunc("GET /v1/lease/ttl", h.leaseTTL)
	mux.HandleFunc("GET /v1/cluster/status", h.status)
	mux.HandleFunc("GET /v1/cluster/members", h.members)
	mux.HandleFunc("GET /v1/cluster/ranges", h.ranges)
	mux.HandleFunc("POST /v1/auth/authenticate", authRoute(svc.Authenticate))
	mux.HandleFunc("POST /v1/auth/enable", authRoute(svc.AuthEnable))
	mux.HandleFunc("POST /v1/auth/disable", authRoute(svc.AuthDisable))
	mux.HandleFunc("POST /v1/auth/status", authRoute(svc.AuthStatus))
	mux.HandleFunc("POST /v1/user/add", authRoute(svc.UserAdd))
	mux.HandleFunc("POST /v1/user/delete", authRoute(svc.UserDelete))
	mux.HandleFunc("POST /v1/user/list", authRoute(svc.UserList))
	mux.HandleFunc("POST /v1/user/get", authRoute(svc.UserGet))
	mux.HandleFunc("POST /v1/user/passwd", authRoute(svc.UserChangePassword))
	mux.HandleFunc("POST /v1/user/grant-role", authRoute(svc.UserGrantRole))
	mux.HandleFunc("POST /v1/user/revoke-role", authRoute(svc.UserRevokeRole))
	mux.HandleFunc("POST /v1/role/add", authRoute(svc.RoleAdd))
	mux.HandleFunc("POST /v1/role/delete", authRoute(svc.RoleDelete))
	mux.HandleFunc("POST /v1/role/list", authRoute(svc.RoleList))
	mux.HandleFunc("POST /v1/role/get", authRoute(svc.RoleGet))
	mux.HandleFunc("POST /v1/role/grant-permission", authRoute(svc.RoleGrantPermission))
	mux.HandleFunc("POST /v1/role/revoke-permission", authRoute(svc.RoleRevokePermission))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			writeError(w, notReady(err))
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	console := ui.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, rpctypes.Error(codes.Unimplemented, rpctypes.ReasonUnknownPath,
			fmt.Sprintf("dialkv: no such path %q (the console is at /ui)", r.URL.Path), nil))
	}))
	mux.Handle("GET /ui", console)
	mux.Handle("GET /ui/", console)
	return withCredentials(keyPaths(mux))
}

// notReady is /readyz's answer for a node that cannot serve: 503 with
// DISK_FULL when its data filesystem is (nearly) full, NO_LEADER when a
// range has no leader, NOT_READY otherwise.
func notReady(err error) error {
	reason := rpctypes.ReasonNotReady
	switch {
	case errors.Is(err, replication.ErrDiskFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		reason = rpctypes.ReasonDiskFull
	case errors.Is(err, replication.ErrNoLeader):
		reason = rpctypes.ReasonNoLeader
	}
	return rpctypes.Error(codes.Unavailable, reason, "dialkv: not ready: "+err.Error(), nil)
}

// keyPaths serves /v1/kv/{key} and /v1/cas/{key} before ServeMux sees
// them: the mux cleans paths and redirects "a//b" or "a/../b" to another
// path, which for a key-value API would mean another key. The key is the
// raw, percent-decoded rest of the path, whatever its slashes and dots.
//
// It also refuses, as JSON errors, what the mux would answer in plain
// text (an unknown path, a wrong method) and a query string that does not
// parse, which url.Values would otherwise drop a piece of in silence: a
// scan's ?prefix=%zz would have scanned everything.
func keyPaths(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(w, invalid("query string %q: %v", r.URL.RawQuery, err))
			return
		}
		for _, prefix := range []string{"/v1/kv/", "/v1/cas/"} {
			raw, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
			if !ok && r.URL.EscapedPath() == strings.TrimSuffix(prefix, "/") {
				// "/v1/kv" is the empty key, as "/v1/kv/" is; the mux
				// would redirect it there.
				raw, ok = "", true
			}
			if !ok {
				continue
			}
			key, err := url.PathUnescape(raw)
			if err != nil {
				writeError(w, invalid("key in the path is not valid percent-encoding: %v", err))
				return
			}
			h, pattern := mux.Handler(&http.Request{Method: r.Method, URL: &url.URL{Path: prefix + "k"}})
			if pattern == "" {
				refuseUnrouted(w, r, h)
				return
			}
			r.SetPathValue("key", key)
			h.ServeHTTP(w, r)
			return
		}
		if clean := cleanPath(r.URL.Path); clean != r.URL.Path && r.Method != http.MethodConnect {
			// The mux would redirect (an HTML 3xx) to the cleaned path;
			// the API answers a path it does not serve with its JSON 404.
			writeError(w, rpctypes.Error(codes.Unimplemented, rpctypes.ReasonUnknownPath,
				fmt.Sprintf("dialkv: no such path %q (did you mean %q? the API is under /v1/; see the README)", r.URL.Path, clean), nil))
			return
		}
		if h, pattern := mux.Handler(r); pattern == "" {
			refuseUnrouted(w, r, h)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath is the path ServeMux redirects p to when they differ: p
// rooted, without "." and ".." elements or repeated slashes, keeping a
// trailing slash.
func cleanPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

// refuseUnrouted answers a request no pattern matched. h is the mux's own
// answer to it: 405 with the Allow header when another method would
// match, else 404. It is run against a recorder, so that its verdict and
// Allow header are kept and its plain-text body is replaced by the JSON
// error body.
func refuseUnrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.code == http.StatusMethodNotAllowed {
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, rpctypes.Error(codes.Unimplemented, rpctypes.ReasonMethodNotAllowed,
			fmt.Sprintf("dialkv: %s does not take %s; it takes %s", r.URL.Path, r.Method, allow), nil))
		return
	}
	writeError(w, rpctypes.Error(codes.Unimplemented, rpctypes.ReasonUnknownPath,
		fmt.Sprintf("dialkv: no such path %q (the API is under /v1/; see the README)", r.URL.Path), nil))
}

// statusRecorder keeps a handler's status and headers, and drops its body.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

type httpAPI struct {
	svc *Service
}

// Bytes is how the HTTP API writes keys and values in JSON; the type
// lives in rpctypes so that clients share it without linking the server.
type Bytes = rpctypes.Bytes

// requestContext applies ?timeout= (default 5s).
func requestContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	timeout := defaultHTTPTimeout
	if t := r.URL.Query().Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return nil, nil, invalid("timeout %q: want a positive duration such as 500ms or 2s", t)
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	return ctx, cancel, nil
}

// boolParam reads an optional boolean query parameter (absent: false).
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("%s %q: want true or false", name, v)
	}
	return b, nil
}

func readOptions(r *http.Request) (*kvpb.ReadOptions, error) {
	q := r.URL.Query()
	level, err := parseLevel(q.Get("consistency"))
	if err != nil {
		return nil, err
	}
	o := &kvpb.ReadOptions{Consistency: level, SessionToken: r.Header.Get(HeaderSession)}
	if t := q.Get("session_token"); t != "" {
		o.SessionToken = t
	}
	if ms := q.Get("max_staleness"); ms != "" {
		d, err := time.ParseDuration(ms)
		if err != nil || d <= 0 {
			return nil, invalid("max_staleness %q: want a positive duration such as 250ms or 5s", ms)
		}
		o.MaxStaleness = durationpb.New(d)
	}
	return o, nil
}

// writeError sends err as JSON with the matching HTTP status. Input errors
// caught here (before the Service) go through the same table.
func writeError(w http.ResponseWriter, err error) {
	if _, ok := status.FromError(err); !ok || rpctypes.InfoOf(err) == nil {
		err = toStatus(err, opRead)
	}
	st, _ := status.FromError(err)
	reason := rpctypes.ReasonOf(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(HeaderReason, string(reason))
	w.WriteHeader(httpStatus(err))
	w.Write(errorJSON(st.Message(), reason, st.Code()))
}

// errorJSON is the body of every HTTP error answer.
func errorJSON(msg string, reason rpctypes.Reason, code codes.Code) []byte {
	b, _ := json.Marshal(map[string]any{"error": msg, "reason": reason, "code": code.String()})
	return append(b, '\n')
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func setWriteHeaders(w http.ResponseWriter, h *kvpb.WriteHeader) {
	w.Header().Set(HeaderServedBy, h.GetServedBy())
	w.Header().Set(HeaderRange, strconv.FormatUint(h.GetRangeId(), 10))
	w.Header().Set(HeaderRevision, strconv.FormatUint(h.GetRevision(), 10))
	w.Header().Set(HeaderSession, h.GetSessionToken())
}

func setReadHeaders(w http.ResponseWriter, h *kvpb.ReadHeader) {
	w.Header().Set(HeaderServedBy, h.GetServedBy())
	w.Header().Set(HeaderRange, strconv.FormatUint(h.GetRangeId(), 10))
	w.Header().Set(HeaderApplied, strconv.FormatUint(h.GetAppliedIndex(), 10))
	w.Header().Set(HeaderConsistency, levelName(h.GetConsistency()))
	w.Header().Set(HeaderStaleness, strconv.FormatInt(h.GetStalenessMs(), 10))
	w.Header().Set(HeaderSession, h.GetSessionToken())
}

// writeResult is the JSON body of an acknowledged write.
type writeResult struct {
	Revision     uint64 `json:"revision"`
	ServedBy     string `json:"served_by"`
	RangeID      uint64 `json:"range_id"`
	SessionToken string `json:"session_token"`
	Deleted      *bool  `json:"deleted,omitempty"`
}

func newWriteResult(h *kvpb.WriteHeader) writeResult {
	return writeResult{Revision: h.GetRevision(), ServedBy: h.GetServedBy(), RangeID: h.GetRangeId(), SessionToken: h.GetSessionToken()}
}

func (h *httpAPI) put(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	limit := int64(h.svc.limits.MaxValueBytes)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, tooLarge("value is over the limit of %d bytes", limit))
			return
		}
		writeError(w, invalid("reading body: %v", err))
		return
	}
	lease, err := leaseParam(r, "lease")
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.Put(ctx, &kvpb.PutRequest{Key: []byte(r.PathValue("key")), Value: body, Lease: lease})
	if err != nil {
		writeError(w, err)
		return
	}
	setWriteHeaders(w, resp.Header)
	writeJSON(w, newWriteResult(resp.Header))
}

func (h *httpAPI) get(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	opts, err := readOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.Get(ctx, &kvpb.GetRequest{Key: []byte(r.PathValue("key")), Read: opts})
	if err != nil {
		if info := rpctypes.InfoOf(err); info != nil && info.Metadata["served_by"] != "" {
			w.Header().Set(HeaderServedBy, info.Metadata["served_by"])
			w.Header().Set(HeaderApplied, info.Metadata["applied_index"])
			w.Header().Set(HeaderSession, info.Metadata["session_token"])
		}
		writeError(w, err)
		return
	}
	setReadHeaders(w, resp.Header)
	w.Header().Set(HeaderRevision, strconv.FormatUint(resp.Kv.GetRevision(), 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(resp.Kv.GetValue())
}

func (h *httpAPI) del(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	resp, err := h.svc.Delete(ctx, &kvpb.DeleteRequest{Key: []byte(r.PathValue("key"))})
	if err != nil {
		writeError(w, err)
		return
	}
	setWriteHeaders(w, resp.Header)
	res := newWriteResult(resp.Header)
	res.Deleted = &resp.Deleted
	writeJSON(w, res)
}

// decodeJSONBody decodes a request body of at most limit bytes that must
// be exactly one JSON value, with no field v lacks; want describes that
// value for the error message. Anything after the value is refused, not
// ignored: a body with trailing garbage, or two requests' bodies run
// together, is not what its sender meant.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, limit int64, v any, want string) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	bodyErr := func(what string, err error) error {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge("request body is over %d bytes", limit)
		}
		return invalid("%s: %v (want %s)", what, err, want)
	}
	if err := dec.Decode(v); err != nil {
		return bodyErr("malformed JSON body", err)
	}
	// One more token: io.EOF when only white space follows the value.
	switch tok, err := dec.Token(); {
	case err == io.EOF:
		return nil
	case err != nil:
		return bodyErr(fmt.Sprintf("JSON body goes on after its value (at byte %d)", dec.InputOffset()), err)
	default:
		return invalid("JSON body goes on after its value: %v at byte %d (want exactly one JSON value, %s)", tok, dec.InputOffset(), want)
	}
}

// casBody is the JSON body of POST /v1/cas/{key}.
type casBody struct {
	Expected      *Bytes `json:"expected"`
	ExpectMissing bool   `json:"expect_missing"`
	Value         *Bytes `json:"value"`
}

func (h *httpAPI) cas(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	var body casBody
	// Two values, each up to 6x larger once JSON-escaped, plus slack.
	limit := int64(12*h.svc.limits.MaxValueBytes + 2*h.svc.limits.MaxKeyBytes + 64<<10)
	if err := decodeJSONBody(w, r, limit, &body, `{"expected": "...", "value": "..."} or {"expect_missing": true, "value": "..."}`); err != nil {
		writeError(w, err)
		return
	}
	if body.Value == nil {
		writeError(w, invalid(`JSON body needs "value"`))
		return
	}
	if body.Expected == nil && !body.ExpectMissing {
		writeError(w, invalid(`JSON body needs "expected" or "expect_missing": true`))
		return
	}
	req := &kvpb.CompareAndSwapRequest{Key: []byte(r.PathValue("key")), ExpectMissing: body.ExpectMissing, NewValue: *body.Value}
	if body.Expected != nil {
		req.ExpectedValue = *body.Expected
	}
	resp, err := h.svc.CompareAndSwap(ctx, req)
	if err != nil {
		writeError(w, err)
		return
	}
	setWriteHeaders(w, resp.Header)
	writeJSON(w, newWriteResult(resp.Header))
}

// queryBytes is a query parameter as bytes, nil when absent or empty: an
// empty scan bound means none, as it does over gRPC.
func queryBytes(q url.Values, name string) []byte {
	if v := q.Get(name); v != "" {
		return []byte(v)
	}
	return nil
}

// scanResult is the JSON body of GET /v1/scan.
type scanResult struct {
	KVs          []rpctypes.KVJSON `json:"kvs"`
	More         bool              `json:"more"`
	NextKey      Bytes             `json:"next_key,omitempty"`
	ServedBy     string            `json:"served_by"`
	RangeID      uint64            `json:"range_id"`
	AppliedIndex uint64            `json:"applied_index"`
	Consistency  string            `json:"consistency"`
	StalenessMS  int64             `json:"staleness_ms"`
	SessionToken string            `json:"session_token"`
}

func (h *httpAPI) scan(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	opts, err := readOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	req := &kvpb.ScanRequest{Start: queryBytes(q, "start"), End: queryBytes(q, "end"), Prefix: queryBytes(q, "prefix"), Read: opts}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.ParseUint(l, 10, 32)
		if err != nil {
			writeError(w, invalid("limit %q: want a non-negative integer", l))
			return
		}
		req.Limit = uint32(n)
	}
	resp, err := h.svc.Scan(ctx, req)
	if err != nil {
		writeError(w, err)
		return
	}
	hd := resp.Header
	setReadHeaders(w, hd)
	out := scanResult{
		KVs: make([]rpctypes.KVJSON, len(resp.Kvs)), More: resp.More, NextKey: resp.NextKey,
		ServedBy: hd.GetServedBy(), RangeID: hd.GetRangeId(), AppliedIndex: hd.GetAppliedIndex(),
		Consistency: levelName(hd.GetConsistency()), StalenessMS: hd.GetStalenessMs(), SessionToken: hd.GetSessionToken(),
	}
	for i, kv := range resp.Kvs {
		out.KVs[i] = rpctypes.KVJSON{Key: kv.Key, Value: kv.Value, Revision: kv.Revision}
	}
	writeJSON(w, out)
}

func (h *httpAPI) status(w http.ResponseWriter, r *http.Request) {
	digest, err := boolParam(r, "digest")
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.Status(r.Context(), &kvpb.StatusRequest{Digest: digest})
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, resp)
}

func (h *httpAPI) members(w http.ResponseWriter, r *http.Request) {
	resp, err := h.svc.Members(r.Context(), &kvpb.MembersRequest{})
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, resp)
}

// ranges is the routing table (the Cluster.Ranges RPC): every user range
// with its replicas and leader hint, and every node. The console draws it.
func (h *httpAPI) ranges(w http.ResponseWriter, r *http.Request) {
	resp, err := h.svc.Ranges(r.Context(), &kvpb.RangesRequest{})
	if err != nil {
		writeError(w, err)
		return
	}
	writeProto(w, resp)
}
