package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestWatch_Validation(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	kv := kvpb.NewKVClient(conn)
	long := []byte("123456789") // testLimits: keys up to 8 bytes
	tests := []struct {
		name   string
		req    *kvpb.WatchRequest
		reason rpctypes.Reason // "" : valid, reaches the backend
	}{
		{"key", &kvpb.WatchRequest{Key: []byte("k")}, ""},
		{"prefix", &kvpb.WatchRequest{Prefix: []byte("p/")}, ""},
		{"start", &kvpb.WatchRequest{Start: []byte("a")}, ""},
		{"start and end", &kvpb.WatchRequest{Start: []byte("a"), End: []byte("b")}, ""},
		{"end alone", &kvpb.WatchRequest{End: []byte("b")}, ""},
		{"from a cursor with a 0 entry", &kvpb.WatchRequest{Key: []byte("k"), From: "7:120,9:0"}, ""},
		{"progress every minute", &kvpb.WatchRequest{Key: []byte("k"), ProgressInterval: durationpb.New(time.Minute)}, ""},
		{"nothing", &kvpb.WatchRequest{}, rpctypes.ReasonInvalid},
		{"key and prefix", &kvpb.WatchRequest{Key: []byte("k"), Prefix: []byte("p")}, rpctypes.ReasonInvalid},
		{"prefix and start", &kvpb.WatchRequest{Prefix: []byte("p"), Start: []byte("a")}, rpctypes.ReasonInvalid},
		{"key and end", &kvpb.WatchRequest{Key: []byte("k"), End: []byte("z")}, rpctypes.ReasonInvalid},
		{"start after end", &kvpb.WatchRequest{Start: []byte("b"), End: []byte("a")}, rpctypes.ReasonInvalid},
		{"start equals end", &kvpb.WatchRequest{Start: []byte("b"), End: []byte("b")}, rpctypes.ReasonInvalid},
		{"key too long", &kvpb.WatchRequest{Key: long}, rpctypes.ReasonTooLarge},
		{"prefix too long", &kvpb.WatchRequest{Prefix: long}, rpctypes.ReasonTooLarge},
		{"end too long", &kvpb.WatchRequest{Start: []byte("a"), End: long}, rpctypes.ReasonTooLarge},
		{"malformed cursor", &kvpb.WatchRequest{Key: []byte("k"), From: "7-120"}, rpctypes.ReasonInvalid},
		{"a session token is no cursor", &kvpb.WatchRequest{Key: []byte("k"), From: "7:1,7:2"}, rpctypes.ReasonInvalid},
		{"negative progress interval", &kvpb.WatchRequest{Key: []byte("k"), ProgressInterval: durationpb.New(-time.Second)}, rpctypes.ReasonInvalid},
		{"progress interval over a minute", &kvpb.WatchRequest{Key: []byte("k"), ProgressInterval: durationpb.New(time.Minute + 1)}, rpctypes.ReasonInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb.reset()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := kv.Watch(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := stream.Recv()
			if tt.reason != "" {
				wantStatus(t, err, codes.InvalidArgument, tt.reason)
				if n := fb.numCalls(); n != 0 {
					t.Fatalf("an invalid watch reached the backend (%d calls)", n)
				}
				return
			}
			if err != nil || msg.GetCursor() != "7:41" {
				t.Fatalf("first message %v, %v; want the fake's progress message", msg, err)
			}
			got := fb.lastCall(t).req.(*kvpb.WatchRequest)
			if !proto.Equal(got, tt.req) {
				t.Fatalf("backend got %v; want %v", got, tt.req)
			}
		})
	}
}

// TestWatch_StreamHasTheClientsContext: a watch lasts as long as its
// client wants; the 10 s default deadline of unary requests must not cut
// it.
func TestWatch_StreamHasTheClientsContext(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := kvpb.NewKVClient(conn).Watch(ctx, &kvpb.WatchRequest{Prefix: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if c := fb.lastCall(t); c.hasDeadline {
		t.Fatalf("the backend's watch has a deadline %v; want the client's context, which has none", c.deadline)
	}
}

// The server's codec sends the events a node encoded once for all its
// watchers: a client decodes exactly the response, every field kept.
func TestWatch_SharedEncodingsDecodeAsTheResponse(t *testing.T) {
	conn, fb := newGRPCEnv(t, testLimits())
	want := []*kvpb.WatchResponse{
		{Cursor: "7:1", Ranges: []*kvpb.WatchRangeState{{RangeId: 7, ServedBy: "n2", AppliedIndex: 1, StalenessMs: 3}}},
		{Cursor: "7:3,9:1", Events: []*kvpb.Event{
			{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("p1"), Value: []byte("v"), PrevValue: []byte("old"), PrevExists: true, RangeId: 7, Index: 2, Lease: 11},
			{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("p2"), RangeId: 7, Index: 3, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED, Lease: 11},
			{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("p3"), Value: bytes.Repeat([]byte("x"), 300<<10), RangeId: 9, Index: 1},
		}},
	}
	fb.setHook(func(context.Context, string, any) (any, error) { return watchScript[*kvpb.WatchResponse](want), nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := kvpb.NewKVClient(conn).Watch(ctx, &kvpb.WatchRequest{Prefix: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(got, w) {
			t.Fatalf("message %d: got %v, want %v", i, got, w)
		}
	}
}

// TestWatch_ErrorsEndTheStreamThroughTheTable: messages already sent
// arrive, then the backend's error as the table maps it.
func TestWatch_ErrorsEndTheStreamThroughTheTable(t *testing.T) {
	tests := []struct {
		err    error
		code   codes.Code
		reason rpctypes.Reason
	}{
		{replication.ErrCompacted, codes.OutOfRange, rpctypes.ReasonCompacted},
		{replication.ErrFeatureUnavailable, codes.FailedPrecondition, rpctypes.ReasonFeatureUnavailable},
		{replication.ErrNoLeader, codes.Unavailable, rpctypes.ReasonNoLeader},
		{errors.New("surprise"), codes.Internal, rpctypes.ReasonInternal},
	}
	for _, tt := range tests {
		t.Run(string(tt.reason), func(t *testing.T) {
			conn, fb := newGRPCEnv(t, testLimits())
			fb.setHook(func(context.Context, string, any) (any, error) {
				return watchScript[*kvpb.WatchResponse]{{Cursor: "7:1"}, {Events: []*kvpb.Event{{Key: []byte("p1"), RangeId: 7, Index: 2}}, Cursor: "7:2"}}, tt.err
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := kvpb.NewKVClient(conn).Watch(ctx, &kvpb.WatchRequest{Prefix: []byte("p")})
			if err != nil {
				t.Fatal(err)
			}
			var cursors []string
			for range 3 {
				m, err := stream.Recv()
				if err != nil {
					wantStatus(t, err, tt.code, tt.reason)
					break
				}
				cursors = append(cursors, m.Cursor)
			}
			if !slices.Equal(cursors, []string{"7:1", "7:2"}) {
				t.Fatalf("received cursors %v before the error; want 7:1 7:2", cursors)
			}
		})
	}
}

func TestWatch_NeedsReadPermissionOnTheWholeSpan(t *testing.T) {
	fx := newAuthFixture(t)
	svc, fb, _ := newTestService(t, testLimits())
	svc.SetAuth(&memAuth{st: fx.enabled}, fuzzTokenTTL)
	alice := withHTTPCreds(context.Background(), "Bearer "+fx.aliceToken, nil) // read/write on prefix "a"
	tests := []struct {
		name   string
		ctx    context.Context
		req    *kvpb.WatchRequest
		reason rpctypes.Reason
	}{
		{"her key", alice, &kvpb.WatchRequest{Key: []byte("a1")}, ""},
		{"her prefix", alice, &kvpb.WatchRequest{Prefix: []byte("a/")}, ""},
		{"a range inside her prefix", alice, &kvpb.WatchRequest{Start: []byte("a1"), End: []byte("a9")}, ""},
		{"another key", alice, &kvpb.WatchRequest{Key: []byte("b")}, rpctypes.ReasonPermissionDenied},
		{"a range past her prefix", alice, &kvpb.WatchRequest{Start: []byte("a"), End: []byte("c")}, rpctypes.ReasonPermissionDenied},
		{"a range to the end of the key space", alice, &kvpb.WatchRequest{Start: []byte("a")}, rpctypes.ReasonPermissionDenied},
		{"no credentials", context.Background(), &kvpb.WatchRequest{Key: []byte("a1")}, rpctypes.ReasonUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb.reset()
			err := svc.watch(tt.ctx, tt.req, func(*rpctypes.WatchMessage) error { return nil })
			if tt.reason == "" {
				if err != nil || fb.numCalls() != 1 {
					t.Fatalf("watch: %v (%d backend calls); want it served", err, fb.numCalls())
				}
				return
			}
			wantStatus(t, err, map[rpctypes.Reason]codes.Code{rpctypes.ReasonPermissionDenied: codes.PermissionDenied, rpctypes.ReasonUnauthenticated: codes.Unauthenticated}[tt.reason], tt.reason)
			if fb.numCalls() != 0 {
				t.Fatal("a refused watch reached the backend")
			}
		})
	}
}

func TestWatchRange_PassesThrough(t *testing.T) {
	svc, fb, _ := newTestService(t, testLimits())
	var got []*kvpb.WatchRangeResponse
	stream := &fakeWatchRangeStream{ctx: context.Background(), sent: &got}
	if err := svc.WatchRange(&kvpb.WatchRangeRequest{RangeId: 7, After: 12}, stream); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UpTo != 12 || fb.lastCall(t).method != "WatchRange" {
		t.Fatalf("sent %v; want the fake's one message up to 12", got)
	}
	wantStatus(t, svc.WatchRange(&kvpb.WatchRangeRequest{}, stream), codes.InvalidArgument, rpctypes.ReasonInvalid)
}

// fakeWatchRangeStream is the server side of an Internal.WatchRange
// stream, recording what is sent.
type fakeWatchRangeStream struct {
	kvpb.Internal_WatchRangeServer
	ctx  context.Context
	sent *[]*kvpb.WatchRangeResponse
}

func (f *fakeWatchRangeStream) Context() context.Context { return f.ctx }

func (f *fakeWatchRangeStream) Send(m *kvpb.WatchRangeResponse) error {
	*f.sent = append(*f.sent, m)
	return nil
}

func TestWriteSSE_OneMessagePerEventTheLastCarryingTheCursor(t *testing.T) {
	tests := []struct {
		name string
		resp *kvpb.WatchResponse
		want string
	}{
		{
			name: "progress",
			resp: &kvpb.WatchResponse{Cursor: "7:120,9:44", Ranges: []*kvpb.WatchRangeState{{RangeId: 7, ServedBy: "n2", AppliedIndex: 130, StalenessMs: 12}}},
			want: "event: progress\nid: 7:120,9:44\n" +
				`data: {"cursor":"7:120,9:44","ranges":[{"range_id":7,"served_by":"n2","applied_index":130,"staleness_ms":12}]}` + "\n\n",
		},
		{
			name: "three events",
			resp: &kvpb.WatchResponse{Cursor: "7:122,9:44", Events: []*kvpb.Event{
				{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("a"), Value: []byte("1"), RangeId: 7, Index: 121},
				{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("b"), RangeId: 7, Index: 122, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED, Lease: 5},
				{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("c"), RangeId: 7, Index: 122, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED, Lease: 5},
			}},
			want: "event: put\n" + `data: {"type":"put","key":"a","value":"1","range_id":7,"index":121}` + "\n\n" +
				"event: delete\n" + `data: {"type":"delete","key":"b","range_id":7,"index":122,"cause":"LEASE_EXPIRED","lease":5}` + "\n\n" +
				"event: delete\nid: 7:122,9:44\n" + `data: {"type":"delete","key":"c","range_id":7,"index":122,"cause":"LEASE_EXPIRED","lease":5,"cursor":"7:122,9:44"}` + "\n\n",
		},
		{
			name: "an empty value, a previous value, binary bytes, a client's delete",
			resp: &kvpb.WatchResponse{Cursor: "3:9", Events: []*kvpb.Event{
				{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("k"), RangeId: 3, Index: 8, PrevValue: []byte{0xff}, PrevExists: true},
				{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("k"), RangeId: 3, Index: 9, Lease: 4},
			}},
			want: "event: put\n" + `data: {"type":"put","key":"k","value":"","prev_value":{"base64":"/w=="},"range_id":3,"index":8}` + "\n\n" +
				"event: delete\nid: 3:9\n" + `data: {"type":"delete","key":"k","range_id":3,"index":9,"cursor":"3:9"}` + "\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeSSE(&b, tt.resp); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("SSE:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

// sseMsg is one parsed server-sent event.
type sseMsg struct {
	event, id string
	data      map[string]any
}

// readSSE parses an SSE body into its messages.
func readSSE(t *testing.T, r io.Reader) []sseMsg {
	t.Helper()
	var out []sseMsg
	var cur sseMsg
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			out = append(out, cur)
			cur = sseMsg{}
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatalf("SSE data %q: %v", line, err)
			}
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return out
}

func TestHTTPWatch_StreamsEventsThenAnErrorEvent(t *testing.T) {
	env := newHTTPEnv(t, testLimits())
	env.fb.setHook(func(context.Context, string, any) (any, error) {
		return watchScript[*kvpb.WatchResponse]{
			{Cursor: "7:1"},
			{Cursor: "7:3", Events: []*kvpb.Event{
				{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("p1"), Value: []byte("v"), RangeId: 7, Index: 2},
				{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("p2"), RangeId: 7, Index: 3},
			}},
		}, replication.ErrCompacted
	})
	r := env.do("GET", "/v1/watch?prefix=p&prev_value=true&progress_interval=2s", nil)
	if r.code != http.StatusOK || r.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%v (Content-Type %q); want 200 text/event-stream", r, r.header.Get("Content-Type"))
	}
	msgs := readSSE(t, bytes.NewReader(r.body))
	var got []string
	for _, m := range msgs {
		got = append(got, m.event+"/"+m.id)
	}
	if want := []string{"progress/7:1", "put/", "delete/7:3", "error/"}; !slices.Equal(got, want) {
		t.Fatalf("messages %v; want %v\n%s", got, want, r.body)
	}
	if e := msgs[3].data; e["reason"] != string(rpctypes.ReasonCompacted) || e["code"] != "OutOfRange" {
		t.Fatalf("error event %v; want COMPACTED/OutOfRange", e)
	}
	req := env.fb.lastCall(t).req.(*kvpb.WatchRequest)
	if string(req.Prefix) != "p" || !req.PrevValue || req.ProgressInterval.AsDuration() != 2*time.Second {
		t.Fatalf("backend got %v", req)
	}
}

func TestHTTPWatch_ErrorsBeforeTheStreamAreJSON(t *testing.T) {
	tests := []struct {
		name   string
		query  string
		err    error
		code   int
		reason rpctypes.Reason
	}{
		{"no key", "", nil, 400, rpctypes.ReasonInvalid},
		{"key and prefix", "key=a&prefix=b", nil, 400, rpctypes.ReasonInvalid},
		{"bad cursor", "key=a&from=x", nil, 400, rpctypes.ReasonInvalid},
		{"bad prev_value", "key=a&prev_value=maybe", nil, 400, rpctypes.ReasonInvalid},
		{"bad progress interval", "key=a&progress_interval=soon", nil, 400, rpctypes.ReasonInvalid},
		{"compacted", "key=a&from=7:1", replication.ErrCompacted, 410, rpctypes.ReasonCompacted},
		{"feature unavailable", "key=a", replication.ErrFeatureUnavailable, 412, rpctypes.ReasonFeatureUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			if tt.err != nil {
				env.fb.setHook(errHook(tt.err))
			}
			r := env.do("GET", "/v1/watch?"+tt.query, nil)
			var body errorBody
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("%v: not a JSON error: %v", r, err)
			}
			if r.code != tt.code || body.Reason != string(tt.reason) || r.header.Get(HeaderReason) != string(tt.reason) {
				t.Fatalf("%v; want %d %s", r, tt.code, tt.reason)
			}
		})
	}
}

func TestHTTPWatch_ResumesFromLastEventID(t *testing.T) {
	tests := []struct {
		name     string
		query    string
		lastID   string
		wantFrom string
	}{
		{"the header when from is absent", "key=a", "7:5,9:0", "7:5,9:0"},
		{"from over the header", "key=a&from=" + url.QueryEscape("7:9"), "7:5", "7:9"},
		{"an explicit empty from: now", "key=a&from=", "7:5", ""},
		{"neither", "key=a", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			var hdr []string
			if tt.lastID != "" {
				hdr = []string{"Last-Event-ID", tt.lastID}
			}
			if r := env.do("GET", "/v1/watch?"+tt.query, nil, hdr...); r.code != http.StatusOK {
				t.Fatal(r)
			}
			if got := env.fb.lastCall(t).req.(*kvpb.WatchRequest).From; got != tt.wantFrom {
				t.Fatalf("from = %q; want %q", got, tt.wantFrom)
			}
		})
	}
}

// TestHTTPWatch_FlushesEachMessage: a client sees the first message while
// the stream is still open.
func TestHTTPWatch_FlushesEachMessage(t *testing.T) {
	svc, _, _ := newTestService(t, testLimits())
	h := &httpAPI{svc: svc}
	pr, pw := io.Pipe()
	w := &pipeResponseWriter{header: http.Header{}, w: pw}
	req, err := http.NewRequest("GET", "/v1/watch?key=a", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		h.watch(w, req)
		pw.Close()
	}()
	// Only flushed bytes reach the pipe: without a flush, this reads EOF.
	body, err := io.ReadAll(pr)
	if err != nil || !strings.HasPrefix(string(body), "event: progress\nid: 7:41\n") {
		t.Fatalf("flushed %q, %v; want the fake's progress message", body, err)
	}
}

// pipeResponseWriter is a ResponseWriter that writes only what is
// flushed, so a test sees exactly the flushed bytes.
type pipeResponseWriter struct {
	header http.Header
	buf    bytes.Buffer
	w      io.Writer
}

func (p *pipeResponseWriter) Header() http.Header         { return p.header }
func (p *pipeResponseWriter) WriteHeader(int)             {}
func (p *pipeResponseWriter) Write(b []byte) (int, error) { return p.buf.Write(b) }
func (p *pipeResponseWriter) Flush() {
	_, _ = p.w.Write(p.buf.Bytes())
	p.buf.Reset()
}
