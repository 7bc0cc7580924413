package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// brokenStream is what a client sees when the node serving its stream
// dies: UNAVAILABLE from the transport, with no dialkv reason.
var brokenStream = status.Error(codes.Unavailable, "error reading from server: EOF")

// TestWatch_ResumesFromTheLastCursorWithoutDuplicates: the first node
// cuts the stream after two messages; the client reopens it on the next
// endpoint from the last cursor it delivered, and every event arrives
// once, in order.
func TestWatch_ResumesFromTheLastCursorWithoutDuplicates(t *testing.T) {
	st := clienttest.NewStore()
	srv1 := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	srv2 := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	srv1.BreakWatch(2, brokenStream)
	c := newTestClient(t, Config{Endpoints: []string{srv1.Addr, srv2.Addr}, DisableRouting: true})

	var (
		keys        []string
		cursors     []string // of every message, in order
		progressed  []string // cursors of progress messages
		lastCursor  string
		resumedFrom string
	)
	for m, err := range c.Watch(testCtx(t), WatchOptions{Prefix: []byte("p/")}) {
		if err != nil {
			t.Fatalf("watch: %v (keys so far %v)", err, keys)
		}
		cursors = append(cursors, m.GetCursor())
		if len(m.GetEvents()) == 0 {
			progressed = append(progressed, m.GetCursor())
			if len(progressed) == 2 {
				resumedFrom = m.GetCursor()
			}
		}
		for _, ev := range m.GetEvents() {
			keys = append(keys, string(ev.GetKey()))
		}
		switch {
		case len(cursors) == 1: // the first progress message
			st.Put([]byte("p/1"), []byte("a"))
			st.Put([]byte("other"), []byte("x"))
		case len(keys) == 1 && len(m.GetEvents()) > 0:
			lastCursor = m.GetCursor()
			st.Put([]byte("p/2"), []byte("b"))
			st.Put([]byte("p/3"), []byte("c"))
		}
		if len(keys) >= 3 {
			break
		}
	}
	if want := []string{"p/1", "p/2", "p/3"}; !slices.Equal(keys, want) {
		t.Fatalf("events for %v; want %v once each, in order", keys, want)
	}
	if srv1.Calls(clienttest.MethodWatch) != 1 || srv2.Calls(clienttest.MethodWatch) != 1 {
		t.Fatalf("watch streams: n1 %d, n2 %d; want one each", srv1.Calls(clienttest.MethodWatch), srv2.Calls(clienttest.MethodWatch))
	}
	// The fake starts a stream with a progress message at the cursor it
	// was asked to resume from.
	if resumedFrom != lastCursor || lastCursor == "" {
		t.Fatalf("the second stream started at %q; want the last delivered cursor %q", resumedFrom, lastCursor)
	}
}

func TestWatch_DefiniteErrorsEndItAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(*clienttest.Server)
		from   string
		reason rpctypes.Reason
		code   codes.Code
	}{
		{"compacted", func(s *clienttest.Server) {
			for i := range 5 {
				s.Store.Put(fmt.Appendf(nil, "k%d", i), []byte("v"))
			}
			s.Store.Compact(4)
		}, "1:2", rpctypes.ReasonCompacted, codes.OutOfRange},
		{"invalid", func(s *clienttest.Server) {
			s.Fail(clienttest.MethodWatch, 1, rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, "no key", nil))
		}, "", rpctypes.ReasonInvalid, codes.InvalidArgument},
		{"permission denied", func(s *clienttest.Server) {
			s.Fail(clienttest.MethodWatch, 1, rpctypes.Error(codes.PermissionDenied, rpctypes.ReasonPermissionDenied, "no", nil))
		}, "", rpctypes.ReasonPermissionDenied, codes.PermissionDenied},
		{"a feature the cluster lacks", func(s *clienttest.Server) {
			s.Fail(clienttest.MethodWatch, 1, rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonFeatureUnavailable, "upgrade", nil))
		}, "", rpctypes.ReasonFeatureUnavailable, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv2 := clienttest.Start(t, clienttest.WithStore(srv.Store))
			tt.setup(srv)
			c := newTestClient(t, Config{Endpoints: []string{srv.Addr, srv2.Addr}, DisableRouting: true})
			var errs []error
			for m, err := range c.Watch(testCtx(t), WatchOptions{Prefix: []byte("k"), From: tt.from}) {
				if err == nil {
					t.Fatalf("got %v; want the error first", m)
				}
				errs = append(errs, err)
			}
			if len(errs) != 1 || rpctypes.ReasonOf(errs[0]) != tt.reason || status.Code(errs[0]) != tt.code {
				t.Fatalf("errors %v; want one %s/%s", errs, tt.reason, tt.code)
			}
			var e *Error
			if !errors.As(errs[0], &e) || e.Op != "watch" {
				t.Fatalf("error %v is not a *client.Error of watch", errs[0])
			}
			if n := srv.Calls(clienttest.MethodWatch) + srv2.Calls(clienttest.MethodWatch); n != 1 {
				t.Fatalf("%d watch streams; a definite error is not retried", n)
			}
		})
	}
}

func TestWatch_GivesUpAfterStreamRetriesInARow(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Fail(clienttest.MethodWatch, 100, brokenStream)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	var last error
	for _, err := range c.Watch(testCtx(t), WatchOptions{Key: []byte("k")}) {
		last = err
	}
	if !IsUnavailable(last) {
		t.Fatalf("watch ended with %v; want UNAVAILABLE", last)
	}
	if n := srv.Calls(clienttest.MethodWatch); n != StreamRetries {
		t.Fatalf("%d attempts; want StreamRetries (%d)", n, StreamRetries)
	}
}

// TestWatch_ARetryableReasonIsRetried: NO_LEADER (a range between
// leaders) resumes the watch, on the next endpoint.
func TestWatch_ARetryableReasonIsRetried(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Fail(clienttest.MethodWatch, 1, rpctypes.Error(codes.Unavailable, rpctypes.ReasonNoLeader, "election", nil))
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	for m, err := range c.Watch(testCtx(t), WatchOptions{Key: []byte("k")}) {
		if err != nil || m.GetCursor() == "" {
			t.Fatalf("watch: %v, %v; want the progress message of the second stream", m, err)
		}
		break
	}
	if n := srv.Calls(clienttest.MethodWatch); n != 2 {
		t.Fatalf("%d streams; want 2", n)
	}
}

func TestWatch_EndsWithTheCallersContext(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var errs []error
	for _, err := range c.Watch(ctx, WatchOptions{Key: []byte("k")}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cancel() // after the first message
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("errors %v; want one wrapping context.Canceled", errs)
	}
	if n := srv.Calls(clienttest.MethodWatch); n != 1 {
		t.Fatalf("%d streams; a cancelled watch is not resumed", n)
	}
}

func TestWatch_PrevValueAndDeletes(t *testing.T) {
	srv := clienttest.Start(t)
	c := newTestClient(t, Config{Endpoints: []string{srv.Addr}})
	var evs []*kvpb.Event
	for m, err := range c.Watch(testCtx(t), WatchOptions{Key: []byte("k"), PrevValue: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetEvents()) == 0 && len(evs) == 0 {
			mustPut(t, c, "k", "1")
			mustPut(t, c, "k", "2")
			if _, err := c.Delete(testCtx(t), []byte("k")); err != nil {
				t.Fatal(err)
			}
		}
		evs = append(evs, m.GetEvents()...)
		if len(evs) >= 3 {
			break
		}
	}
	var got []string
	for _, ev := range evs {
		got = append(got, fmt.Sprintf("%s %s prev=%s/%v", ev.GetType(), ev.GetValue(), ev.GetPrevValue(), ev.GetPrevExists()))
	}
	want := []string{"EVENT_TYPE_PUT 1 prev=/false", "EVENT_TYPE_PUT 2 prev=1/true", "EVENT_TYPE_DELETE  prev=2/true"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q; want %q", got, want)
	}
}
