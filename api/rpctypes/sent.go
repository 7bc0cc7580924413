package rpctypes

import (
	"errors"
	"net"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// NeverSent reports whether a failed gRPC call provably never reached a
// server, so that retrying it cannot apply a write twice. It is dialkv's
// one rule for this: the client's retry loop, a node forwarding to a
// range's leader and the Jepsen-style workload all ask it, and a write it
// wrongly calls never sent may be applied twice, so every doubt answers
// false.
//
// p is the peer the call recorded with the grpc.Peer call option; nil
// (nothing recorded) proves nothing. All three must hold:
//
//   - p has no address. gRPC records the peer of the attempt that ended
//     the call once that attempt has a stream on a transport; without one
//     the request's headers were never written. (grpc-go transparently
//     retries a stream the server refused unprocessed, and dialkv sets no
//     gRPC retry policy, so no earlier attempt can have reached a server.)
//   - The status is codes.Unavailable with no details: what a fail-fast
//     call gets from a channel with no connection. The code alone proves
//     nothing: a connection that broke after the request was written gives
//     Unavailable too, and so does a server, though every status a dialkv
//     server sends carries an ErrorInfo.
//   - The message is gRPC's own for a connection that was never made: a
//     dial that failed ("Error while dialing", "connection refused"), a
//     handshake that never completed ("error reading server preface"), or
//     a target that resolved to no address.
//
// A wait-for-ready call that timed out, or a cancelled one, may also never
// have left, but its code (DeadlineExceeded, Canceled) is the one a call
// cut off in flight gets: false.
func NeverSent(err error, p *peer.Peer) bool {
	if err == nil || p == nil || p.Addr != nil {
		return false
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || len(st.Details()) != 0 {
		return false
	}
	msg := st.Message()
	for _, sign := range neverSentSigns {
		if strings.Contains(msg, sign) {
			return true
		}
	}
	return false
}

// neverSentSigns are the texts grpc-go puts in the status of a call its
// channel could not connect for: the transport's dial error, and the
// pick-first balancer's resolver errors.
var neverSentSigns = []string{
	"Error while dialing",
	"connection refused",
	// The TCP connection opened but the server's HTTP/2 preface never
	// arrived (the peer closed it, or it was going down): a channel
	// creates streams only on a transport that has read the preface, so
	// nothing was written for the call.
	"error reading server preface",
	"name resolver error",
	"produced zero addresses",
}

// NeverSentHTTP is NeverSent for the HTTP API: whether req, which failed
// with err from an http.Client, provably never reached a server. Every
// doubt answers false, as in NeverSent.
//
// The proof is a failed dial (a *net.OpError whose Op is "dial": refused,
// timed out, unroutable, unresolvable): the transport dials before it
// writes a byte, and a request that fails on its dial was written nowhere.
// A connection reset, an EOF or a timeout on a connection that was made
// may come after the request was written: false.
//
// That holds only because net/http retries a non-replayable request
// (anything but GET, HEAD, OPTIONS and TRACE without an Idempotency-Key
// header) on a fresh connection only when the attempt before wrote
// nothing. A replayable request is also retried after its request was
// written on a reused connection that broke, so a failed dial on that
// retry proves nothing about the first attempt: false. (Reads are
// replayable and never need the answer; writes are PUT and POST.)
func NeverSentHTTP(req *http.Request, err error) bool {
	if err == nil || req == nil || replayable(req) {
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// replayable is net/http's Request.isReplayable without its body check (a
// body that cannot be rewound makes a request not replayable there; here
// it still counts, which only answers false more often): a request the
// transport may send again after it was written once.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	// Present, even empty, is enough for net/http.
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}
