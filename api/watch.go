package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A watch is a stream, so it does not go through run: it gets no default
// deadline (a watch lasts as long as its client wants; the stream's
// context is the client's), and it counts in the metrics by code only.

// maxProgressInterval bounds how long an idle watch may go without a
// progress message: longer, and a client cannot tell a quiet span from a
// dead stream.
const maxProgressInterval = time.Minute

// checkWatch validates a watch request as Scan validates a scan.
func (s *Service) checkWatch(r *kvpb.WatchRequest) error {
	forms := 0
	for _, set := range []bool{len(r.Key) > 0, len(r.Prefix) > 0, len(r.Start) > 0 || len(r.End) > 0} {
		if set {
			forms++
		}
	}
	if forms != 1 {
		return invalid("a watch names exactly one of key, prefix, or start with an optional end (got %d)", forms)
	}
	for _, k := range [][]byte{r.Key, r.Prefix, r.Start, r.End} {
		if len(k) > s.limits.MaxKeyBytes {
			return tooLarge("watched key or bound is %d bytes; the limit is %d", len(k), s.limits.MaxKeyBytes)
		}
	}
	if len(r.End) > 0 && bytes.Compare(r.Start, r.End) >= 0 {
		return invalid("watch start %q is not before end %q", r.Start, r.End)
	}
	if _, err := rpctypes.ParseWatchCursor(r.From); err != nil {
		return invalid("from: %v", err)
	}
	if pi := r.ProgressInterval; pi != nil {
		if err := pi.CheckValid(); err != nil {
			return invalid("progress_interval: %v", err)
		}
		if d := pi.AsDuration(); d < 0 || d > maxProgressInterval {
			return invalid("progress_interval %v is outside 0..%v (0: the default, 1s)", d, maxProgressInterval)
		}
	}
	return nil
}

// authorizeWatch needs read permission on every key the watch can see.
func (s *Service) authorizeWatch(ctx context.Context, r *kvpb.WatchRequest) error {
	if len(r.Key) > 0 {
		return s.authorizeKey(ctx, auth.OpRead, r.Key)
	}
	start, end := scanBounds(r.Prefix, r.Start, r.End)
	return s.authorizeRange(ctx, auth.OpRead, start, end)
}

// watch serves one watch, for gRPC and HTTP alike: send is called for each
// message, never concurrently. The error is a status from the error table.
func (s *Service) watch(ctx context.Context, req *kvpb.WatchRequest, send func(*rpctypes.WatchMessage) error) error {
	defer s.metrics.watchOpened()()
	err := s.checkWatch(req)
	if err == nil {
		err = s.authorizeWatch(ctx, req)
	}
	var sendErr error
	if err == nil {
		err = s.b.Watch(ctx, req, func(m *rpctypes.WatchMessage) error {
			if e := send(m); e != nil {
				sendErr = e
				return e
			}
			return nil
		})
	}
	if sendErr != nil && errors.Is(err, sendErr) {
		// The watcher went away (or its connection broke): nothing failed
		// on this side.
		err = status.Error(codes.Canceled, "dialkv: the watcher went away: "+sendErr.Error())
	}
	err = classify(err, opRead, err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded))
	s.metrics.observeStream("Watch", err)
	return err
}

// Watch is KV.Watch. On the servers NewGRPCServer and NewPeerGRPCServer
// build, its messages go out whole through SendMsg, so that their codec
// (watchCodec) sends the events' shared encodings; on any other server,
// as plain responses.
func (s *Service) Watch(req *kvpb.WatchRequest, stream kvpb.KV_WatchServer) error {
	send := func(m *rpctypes.WatchMessage) error { return stream.Send(m.Resp) }
	if s.watchCodec {
		send = func(m *rpctypes.WatchMessage) error { return stream.SendMsg(m) }
	}
	return s.watch(stream.Context(), req, send)
}

// WatchRange is Internal.WatchRange: a peer reads one range's events from
// this node's replica.
func (s *Service) WatchRange(req *kvpb.WatchRangeRequest, stream kvpb.Internal_WatchRangeServer) error {
	var err error
	if req.RangeId == 0 {
		err = invalid("watch range needs a range id")
	} else {
		err = s.b.WatchRange(stream.Context(), req, stream.Send)
	}
	err = classify(err, opRead, err != nil && errors.Is(stream.Context().Err(), context.DeadlineExceeded))
	s.metrics.observeStream("WatchRange", err)
	return err
}

// eventJSON is one watch event in JSON, over HTTP (SSE data) as kvctl
// watch -w json prints it.
type eventJSON struct {
	Type string `json:"type"` // put or delete
	Key  Bytes  `json:"key"`
	// Value is set on puts only, PrevValue when the watch asked for
	// previous values and the key had one.
	Value     *Bytes `json:"value,omitempty"`
	PrevValue *Bytes `json:"prev_value,omitempty"`
	RangeID   uint64 `json:"range_id"`
	Index     uint64 `json:"index"`
	// Cause and Lease: a delete made by a lease's end.
	Cause string `json:"cause,omitempty"`
	Lease int64  `json:"lease,omitempty"`
	// Cursor is the watch's cursor after this event, where that is a
	// valid place to resume from (the last event of a message).
	Cursor string `json:"cursor,omitempty"`
}

// eventTypeName is an event's type as JSON and SSE name it: put, delete.
func eventTypeName(t kvpb.EventType) string {
	switch t {
	case kvpb.EventType_EVENT_TYPE_PUT:
		return "put"
	case kvpb.EventType_EVENT_TYPE_DELETE:
		return "delete"
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_"))
}

// deleteCauseName is LEASE_EXPIRED or LEASE_REVOKED, "" for a client's
// delete.
func deleteCauseName(c kvpb.DeleteCause) string {
	if c == kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(c.String(), "DELETE_CAUSE_")
}

func newEventJSON(ev *kvpb.Event, cursor string) eventJSON {
	out := eventJSON{Type: eventTypeName(ev.Type), Key: ev.Key, RangeID: ev.RangeId, Index: ev.Index, Cursor: cursor}
	if ev.Type == kvpb.EventType_EVENT_TYPE_PUT {
		v := Bytes(ev.Value)
		out.Value = &v
	}
	if ev.PrevExists {
		v := Bytes(ev.PrevValue)
		out.PrevValue = &v
	}
	if out.Cause = deleteCauseName(ev.Cause); out.Cause != "" {
		out.Lease = ev.Lease
	}
	return out
}

// progressJSON is a progress message's SSE data.
type progressJSON struct {
	Cursor string           `json:"cursor"`
	Ranges []rangeStateJSON `json:"ranges"`
}

type rangeStateJSON struct {
	RangeID      uint64 `json:"range_id"`
	ServedBy     string `json:"served_by"`
	AppliedIndex uint64 `json:"applied_index"`
	StalenessMS  int64  `json:"staleness_ms"`
}

// writeSSE writes one WatchResponse as server-sent events: a progress
// message for a response without events, else one message per event.
// Only the last event carries the response's cursor as its id: an id is
// where a client resumes (Last-Event-ID), and in the middle of a response
// the next event may share its index (a lease's deletes) or a split may
// change the ranges, so no cursor there is known to be safe.
func writeSSE(b *bytes.Buffer, resp *kvpb.WatchResponse) error {
	if len(resp.Events) == 0 {
		p := progressJSON{Cursor: resp.Cursor, Ranges: make([]rangeStateJSON, len(resp.Ranges))}
		for i, r := range resp.Ranges {
			p.Ranges[i] = rangeStateJSON{RangeID: r.RangeId, ServedBy: r.ServedBy, AppliedIndex: r.AppliedIndex, StalenessMS: r.StalenessMs}
		}
		return sseMessage(b, "progress", resp.Cursor, p)
	}
	for i, ev := range resp.Events {
		cursor := ""
		if i == len(resp.Events)-1 {
			cursor = resp.Cursor
		}
		if err := sseMessage(b, eventTypeName(ev.Type), cursor, newEventJSON(ev, cursor)); err != nil {
			return err
		}
	}
	return nil
}

// sseMessage appends one message; JSON has no raw newlines, so data is
// one line.
func sseMessage(b *bytes.Buffer, event, id string, data any) error {
	js, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	b.WriteString("event: " + event + "\n")
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	b.WriteString("data: ")
	b.Write(js)
	b.WriteString("\n\n")
	return nil
}

// watchRequest builds a WatchRequest from GET /v1/watch's query. A
// missing from is the Last-Event-ID header, so an EventSource that
// reconnects resumes where it was.
func watchRequest(r *http.Request) (*kvpb.WatchRequest, error) {
	q := r.URL.Query()
	req := &kvpb.WatchRequest{Key: queryBytes(q, "key"), Prefix: queryBytes(q, "prefix"), Start: queryBytes(q, "start"), End: queryBytes(q, "end"), From: q.Get("from")}
	if !q.Has("from") {
		req.From = strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	}
	var err error
	if req.PrevValue, err = boolParam(r, "prev_value"); err != nil {
		return nil, err
	}
	if v := q.Get("progress_interval"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, invalid("progress_interval %q: want a duration such as 500ms or 5s", v)
		}
		req.ProgressInterval = durationpb.New(d)
	}
	return req, nil
}

// watch serves GET /v1/watch as server-sent events. An error before the
// first message is the usual JSON error with its status; after it, an
// "error" event carrying the same JSON, and the stream ends.
func (h *httpAPI) watch(w http.ResponseWriter, r *http.Request) {
	req, err := watchRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rc := http.NewResponseController(w)
	started := false
	var buf bytes.Buffer
	err = h.svc.watch(r.Context(), req, func(m *rpctypes.WatchMessage) error {
		resp := m.Resp
		if !started {
			// The server's read and write timeouts bound a request; a
			// watch is one request for as long as the client stays.
			// (Not every ResponseWriter supports deadlines; a test's
			// does not, and has none to clear.)
			_ = rc.SetReadDeadline(time.Time{})
			_ = rc.SetWriteDeadline(time.Time{})
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		buf.Reset()
		if err := writeSSE(&buf, resp); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("write events: %w", err)
		}
		return rc.Flush()
	})
	switch {
	case err == nil:
		// The node ended the stream without an error (it is stopping):
		// the client resumes from its last id elsewhere.
	case !started:
		writeError(w, err)
	case r.Context().Err() != nil:
		// The client left; there is no one to tell.
	default:
		st, _ := status.FromError(err)
		buf.Reset()
		buf.WriteString("event: error\ndata: ")
		buf.Write(bytes.TrimSuffix(errorJSON(st.Message(), rpctypes.ReasonOf(err), st.Code()), []byte("\n")))
		buf.WriteString("\n\n")
		_, _ = w.Write(buf.Bytes())
		_ = rc.Flush()
	}
}
