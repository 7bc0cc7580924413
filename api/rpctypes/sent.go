package rpctypes

import (
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
