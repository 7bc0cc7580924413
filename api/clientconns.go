package api

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
)

// How long a client may hold a connection on the client ports is bounded
// here and by the HTTP server's timeouts (cmd/kvd); how many it may hold is
// bounded by the listener (internal/connlimit). None of this applies to
// the peer port, whose few connections come from other nodes.

// ClientConnTimeouts bound how long a client connection may sit without
// doing work.
type ClientConnTimeouts struct {
	// Idle closes a gRPC connection that has had no RPC in flight for this
	// long (the client reconnects on its next RPC).
	Idle time.Duration
	// Handshake bounds a new gRPC connection's HTTP/2 preface: a socket
	// that connects and sends nothing is closed after it.
	Handshake time.Duration
}

// keepaliveMinTime is the shortest keepalive ping interval a client may
// use; a client pinging more often is disconnected (GOAWAY
// "too_many_pings"). Pings are allowed on a connection without RPCs: they
// do not keep it from being closed as idle, and a client that watches its
// connection's health is no abuse.
const keepaliveMinTime = 5 * time.Second

// ClientGRPCOptions are the client port's connection bounds, for
// NewGRPCServer's extra options: idle connections are closed, a connection
// must finish its handshake in time, and keepalive pings are enforced. The
// server also pings a connection that has been silent for a while, so a
// client that vanished without closing its socket is found and dropped.
func ClientGRPCOptions(t ClientConnTimeouts) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(t.Handshake),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: t.Idle,
			Time:              2 * time.Minute,
			Timeout:           20 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
}

// refusalLinger bounds how long RefuseHTTP spends on one connection.
const refusalLinger = time.Second

// RefuseHTTP answers a connection that the HTTP port has no room for with
// 503 and reason TOO_MANY_CONNECTIONS, and closes it (at most
// refusalLinger later). It is the refusal function of the HTTP port's
// connlimit.Listener. The request is never parsed or served, so a client
// may retry it on another node whatever it was.
func RefuseHTTP(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(refusalLinger))
	// Answer only once the request's headers are in: an HTTP client takes
	// a response that comes before its request for a broken connection.
	if !skipHeaders(c) {
		return
	}
	body := errorJSON("dialkv: the node's HTTP port holds as many client connections as it may; retry later or on another node",
		rpctypes.ReasonTooManyConnections, codes.Unavailable)
	head := fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n%s: %s\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
		HeaderReason, rpctypes.ReasonTooManyConnections, len(body))
	if _, err := c.Write(append([]byte(head), body...)); err != nil {
		return
	}
	// Closing a socket with unread input (the request's body) makes the
	// kernel send a reset, which can destroy the response before the
	// client reads it. Send FIN instead and discard what the client sends
	// until it closes too (or the deadline passes).
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 8<<20))
}

// skipHeaders reads from c up to the blank line that ends an HTTP
// request's headers, and reports whether it got there within 64 KiB and
// c's deadline.
func skipHeaders(c net.Conn) bool {
	const maxHeaders = 64 << 10
	var buf [4 << 10]byte
	var tail []byte // the last bytes read, so the end is found across reads
	for read := 0; read < maxHeaders; {
		n, err := c.Read(buf[:])
		read += n
		tail = append(tail, buf[:n]...)
		if bytes.Contains(tail, []byte("\r\n\r\n")) {
			return true
		}
		tail = tail[max(0, len(tail)-3):]
		if err != nil {
			return false
		}
	}
	return false
}
