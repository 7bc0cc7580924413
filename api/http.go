package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
// /readyz and /metrics from gatherer.
func NewHTTPHandler(svc *Service, gatherer prometheus.Gatherer, ready ReadyFunc) http.Handler {
	h := &httpAPI{svc: svc}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/kv/{key...}", h.put)
	mux.HandleFunc("GET /v1/kv/{key...}", h.get)
	mux.HandleFunc("DELETE /v1/kv/{key...}", h.del)
	mux.HandleFunc("POST /v1/cas/{key...}", h.cas)
	mux.HandleFunc("GET /v1/scan", h.scan)
	mux.HandleFunc("GET /v1/cluster/status", h.status)
	mux.HandleFunc("GET /v1/cluster/members", h.members)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return keyPaths(mux)
}

// keyPaths serves /v1/kv/{key} and /v1/cas/{key} before ServeMux sees
// them: the mux cleans paths and redirects "a//b" or "a/../b" to another
// path, which for a key-value API would mean another key. The key is the
// raw, percent-decoded rest of the path, whatever its slashes and dots.
func keyPaths(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, prefix := range []string{"/v1/kv/", "/v1/cas/"} {
			raw, ok := strings.CutPrefix(r.URL.EscapedPath(), prefix)
			if !ok {
				continue
			}
			key, err := url.PathUnescape(raw)
			if err != nil {
				writeError(w, invalid("key in the path is not valid percent-encoding: %v", err))
				return
			}
			h, _ := mux.Handler(&http.Request{Method: r.Method, URL: &url.URL{Path: prefix + "k"}})
			r.SetPathValue("key", key)
			h.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type httpAPI struct {
	svc *Service
}

// Bytes is how the HTTP API writes keys and values in JSON: a string when
// valid UTF-8, else {"base64": "..."}.
type Bytes []byte

func (b Bytes) MarshalJSON() ([]byte, error) {
	if utf8.Valid(b) {
		return json.Marshal(string(b))
	}
	return json.Marshal(map[string]string{"base64": base64.StdEncoding.EncodeToString(b)})
}

func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*b = Bytes(s)
		return nil
	}
	var obj struct {
		Base64 *string `json:"base64"`
	}
	if err := json.Unmarshal(data, &obj); err != nil || obj.Base64 == nil {
		return errors.New(`want a string or {"base64": "..."}`)
	}
	raw, err := base64.StdEncoding.DecodeString(*obj.Base64)
	if err != nil {
		return fmt.Errorf("base64: %w", err)
	}
	*b = raw
	return nil
}

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
	code := httpStatus(err)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": st.Message(), "reason": reason, "code": st.Code().String()})
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
	resp, err := h.svc.Put(ctx, &kvpb.PutRequest{Key: []byte(r.PathValue("key")), Value: body})
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
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, tooLarge("request body is over %d bytes", limit))
			return
		}
		writeError(w, invalid(`malformed JSON body: %v (want {"expected": "...", "value": "..."} or {"expect_missing": true, "value": "..."})`, err))
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

// scanResult is the JSON body of GET /v1/scan.
type scanResult struct {
	KVs          []scanKV `json:"kvs"`
	More         bool     `json:"more"`
	NextKey      Bytes    `json:"next_key,omitempty"`
	ServedBy     string   `json:"served_by"`
	RangeID      uint64   `json:"range_id"`
	AppliedIndex uint64   `json:"applied_index"`
	Consistency  string   `json:"consistency"`
	StalenessMS  int64    `json:"staleness_ms"`
	SessionToken string   `json:"session_token"`
}

type scanKV struct {
	Key      Bytes  `json:"key"`
	Value    Bytes  `json:"value"`
	Revision uint64 `json:"revision"`
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
	req := &kvpb.ScanRequest{Start: []byte(q.Get("start")), End: []byte(q.Get("end")), Prefix: []byte(q.Get("prefix")), Read: opts}
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
		KVs: make([]scanKV, len(resp.Kvs)), More: resp.More, NextKey: resp.NextKey,
		ServedBy: hd.GetServedBy(), RangeID: hd.GetRangeId(), AppliedIndex: hd.GetAppliedIndex(),
		Consistency: levelName(hd.GetConsistency()), StalenessMS: hd.GetStalenessMs(), SessionToken: hd.GetSessionToken(),
	}
	for i, kv := range resp.Kvs {
		out.KVs[i] = scanKV{Key: kv.Key, Value: kv.Value, Revision: kv.Revision}
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
