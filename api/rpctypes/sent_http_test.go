package rpctypes

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNeverSentHTTP_OnlyAFailedDialOfAWrite: the error shapes an
// http.Client returns, and which of them prove the request never left.
func TestNeverSentHTTP_OnlyAFailedDialOfAWrite(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7001}
	opErr := func(op string, err error) error {
		return &url.Error{Op: "Put", URL: "http://127.0.0.1:7001/v1/kv/k", Err: &net.OpError{Op: op, Net: "tcp", Addr: addr, Err: err}}
	}
	refused := opErr("dial", &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED})
	req := func(method string, header ...string) *http.Request {
		r := httptest.NewRequest(method, "http://127.0.0.1:7001/v1/kv/k", nil)
		for _, h := range header {
			r.Header[h] = nil // present, even empty, as net/http counts it
		}
		return r
	}
	tests := []struct {
		name string
		req  *http.Request
		err  error
		want bool
	}{
		{"PUT, dial refused", req(http.MethodPut), refused, true},
		{"POST, dial refused", req(http.MethodPost), refused, true},
		{"PUT, dial timed out", req(http.MethodPut), opErr("dial", timeoutErr{}), true},
		{"PUT, name did not resolve", req(http.MethodPut), opErr("dial", &net.DNSError{Err: "no such host", Name: "node1", IsNotFound: true}), true},
		{"DELETE, dial refused", req(http.MethodDelete), refused, true},

		{"no error", req(http.MethodPut), nil, false},
		{"no request", nil, refused, false},
		// A replayable request may have been written on a reused
		// connection before the transport dialled again.
		{"GET, dial refused", req(http.MethodGet), refused, false},
		{"HEAD, dial refused", req(http.MethodHead), refused, false},
		{"PUT with Idempotency-Key, dial refused", req(http.MethodPut, "Idempotency-Key"), refused, false},
		{"POST with X-Idempotency-Key, dial refused", req(http.MethodPost, "X-Idempotency-Key"), refused, false},
		// The workload's old rule: any ECONNREFUSED in the chain.
		{"refused outside a dial", req(http.MethodPut), opErr("read", &os.SyscallError{Syscall: "read", Err: syscall.ECONNREFUSED}), false},
		{"reset after the request was written", req(http.MethodPut), opErr("read", &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}), false},
		{"broken pipe while writing", req(http.MethodPost), opErr("write", &os.SyscallError{Syscall: "write", Err: syscall.EPIPE}), false},
		{"proxy connect failed", req(http.MethodPut), opErr("proxyconnect", &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), false},
		{"server closed the connection", req(http.MethodPut), &url.Error{Op: "Put", URL: "u", Err: io.EOF}, false},
		{"client timed out", req(http.MethodPut), &url.Error{Op: "Put", URL: "u", Err: context.DeadlineExceeded}, false},
		{"bare error text", req(http.MethodPut), errors.New("dial tcp 127.0.0.1:7001: connect: connection refused"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NeverSentHTTP(tc.req, tc.err); got != tc.want {
				t.Errorf("NeverSentHTTP(%v, %v) = %v, want %v", tc.req != nil, tc.err, got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

// TestNeverSentHTTP_RealErrors checks the rule against what net/http
// itself returns, so that a Go upgrade that changes its error chain fails
// here rather than turning refused writes indeterminate (or worse).
func TestNeverSentHTTP_RealErrors(t *testing.T) {
	put := func(t *testing.T, addr string) (*http.Request, error) {
		t.Helper()
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+addr+"/v1/kv/k", strings.NewReader("v"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("PUT answered %s", resp.Status)
		}
		t.Logf("err %v", err)
		return req, err
	}

	t.Run("refused connection is never sent", func(t *testing.T) {
		ln := listenLocal(t)
		addr := ln.Addr().String()
		ln.Close()
		if req, err := put(t, addr); !NeverSentHTTP(req, err) {
			t.Errorf("NeverSentHTTP(PUT, %v) = false for a refused connection", err)
		}
	})

	// The server read the whole request, then dropped the connection
	// (closed it, or reset it), as a node killed mid-write does.
	for _, reset := range []bool{false, true} {
		name := map[bool]string{false: "closed", true: "reset"}[reset]
		t.Run("connection "+name+" after the request was read was sent", func(t *testing.T) {
			addr := serveHTTP(t, func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.ReadAll(r.Body); err != nil {
					t.Errorf("reading the body: %v", err)
				}
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				if reset {
					conn.(*net.TCPConn).SetLinger(0) // close sends RST
				}
				conn.Close()
			})
			if req, err := put(t, addr); NeverSentHTTP(req, err) {
				t.Errorf("NeverSentHTTP(PUT, %v) = true for a request the server read", err)
			}
		})
	}
}

// serveHTTP starts an HTTP server on a loopback port below 32768 and stops
// it when the test ends.
func serveHTTP(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = listenLocal(t)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}
