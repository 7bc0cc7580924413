package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/prometheus/client_golang/prometheus"
)

// pipeListener hands an http.Server the server ends of in-memory pipes,
// so that a test can write raw bytes to it without a socket.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// dial returns the client end of a new connection to the server.
func (l *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	select {
	case l.conns <- server:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not accept")
	}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return client
}

// serveRaw runs the HTTP API over a fake backend behind JSONRequestErrors.
func serveRaw(t *testing.T) *pipeListener {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc := NewService(&fakeBackend{}, testLimits(), NewMetrics(reg), nil)
	handler := NewHTTPHandler(svc, reg, func(context.Context) error { return nil })
	ln := newPipeListener()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 4 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(JSONRequestErrors(ln))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln
}

// TestJSONRequestErrors_RequestsNetHTTPRefusesAnswerJSON: requests that
// net/http refuses before any handler sees them (a path with a malformed
// percent-escape, a bad header, headers over the limit) get the JSON error
// body and X-Dialkv-Reason like every other error.
func TestJSONRequestErrors_RequestsNetHTTPRefusesAnswerJSON(t *testing.T) {
	ln := serveRaw(t)
	tests := []struct {
		name    string
		request string
		code    int
		reason  rpctypes.Reason
	}{
		{"bad escape in a key", "GET /v1/kv/a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, rpctypes.ReasonInvalid},
		{"truncated escape in a key", "PUT /v1/kv/a% HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", 400, rpctypes.ReasonInvalid},
		{"bad escape in a path", "GET /v1/sc%2gan HTTP/1.1\r\nHost: x\r\n\r\n", 400, rpctypes.ReasonInvalid},
		{"malformed header line", "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, rpctypes.ReasonInvalid},
		{"missing Host", "GET /v1/kv/a HTTP/1.1\r\n\r\n", 400, rpctypes.ReasonInvalid},
		{"headers over the limit", "GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 8<<10) + "\r\n\r\n", 431, rpctypes.ReasonTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ln.dial(t)
			// The server answers while the request may still be in the
			// pipe: write it from its own goroutine.
			go io.WriteString(c, tc.request)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
			r := httpResult{code: resp.StatusCode, header: resp.Header, body: body}
			eb := wantHTTPError(t, r, tc.code, tc.reason)
			if !strings.Contains(eb.Error, "could not be read") {
				t.Errorf("error %q does not say the request could not be read", eb.Error)
			}
		})
	}
}

// TestJSONRequestErrors_PassesOtherAnswersThrough: answers of the handlers
// pass untouched, on a connection kept alive across requests, plain-text
// bodies included.
func TestJSONRequestErrors_PassesOtherAnswersThrough(t *testing.T) {
	ln := serveRaw(t)
	c := ln.dial(t)
	rd := bufio.NewReader(c)
	for i, tc := range []struct {
		req  string
		code int
		body string
	}{
		{"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok\n"},
		{"PUT /v1/kv/a%2Fb HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv", 200, ""},
		{"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, ""},
		{"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok\n"},
	} {
		go io.WriteString(c, tc.req)
		resp, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: body: %v", i, err)
		}
		if resp.StatusCode != tc.code || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("request %d: %d %q; want %d %q", i, resp.StatusCode, body, tc.code, tc.body)
		}
		if resp.Close {
			t.Errorf("request %d: the connection was closed after a good request", i)
		}
	}
}

// TestJSONRefusal_RecognisesOnlyNetHTTPsRefusal: the replacement applies
// to net/http's own refusal and to nothing a handler writes.
func TestJSONRefusal_RecognisesOnlyNetHTTPsRefusal(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"bad request", "HTTP/1.1 400 Bad Request" + plainErrorHeaders + "400 Bad Request", true},
		{"bad request with a reason", "HTTP/1.1 400 Bad Request: missing required Host header" + plainErrorHeaders + "400 Bad Request: missing required Host header", true},
		{"headers too large", "HTTP/1.1 431 Request Header Fields Too Large" + plainErrorHeaders + "431 Request Header Fields Too Large", true},
		{"a handler's 400", "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Wed, 02 Dec 2026 17:09:26 GMT\r\nConnection: close\r\n\r\nx", false},
		{"a handler's 200", "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nok", false},
		{"refusal without a body", "HTTP/1.1 400 Bad Request" + plainErrorHeaders, true},
		{"body bytes", "HTTP/1.1 400 Bad Request" + plainErrorHeaders[2:], false},
		{"HTTP/1.0", "HTTP/1.0 400 Bad Request" + plainErrorHeaders + "x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := jsonRefusal([]byte(tc.in))
			if ok != tc.want {
				t.Fatalf("recognised %v; want %v", ok, tc.want)
			}
			if !ok {
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(out))), nil)
			if err != nil {
				t.Fatalf("replacement does not parse: %v\n%s", err, out)
			}
			var eb errorBody
			if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("replacement body: %v", err)
			}
			if eb.Reason == "" || resp.Header.Get(HeaderReason) != eb.Reason || !resp.Close {
				t.Errorf("replacement %q", out)
			}
		})
	}
}
