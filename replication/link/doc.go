// Package link carries the Raft messages of all of a node's ranges to each
// peer over one connection, instead of a NetworkTransport and its pool of
// connections per range.
//
// A Link is the node's end: it owns at most one outgoing connection per
// peer address and serves the connections peers open to it. Each range
// gets a RangeTransport from Link.Open, a raft.Transport (with
// raft.WithClose and raft.WithPreVote) whose requests carry the range id,
// a request id and the rpc type; the peer's Link hands each to the
// range's Consumer (or its heartbeat handler) and sends back Raft's answer
// under the same request id. docs/design/link.md explains the choices;
// the short version:
//
//   - Framing. A connection starts with the mux's kind byte 'L' and a
//     versioned hello; then both directions are byte streams in checked
//     frames (length, sequence number, CRC-32C: see frame.go), so a lost,
//     repeated or damaged byte closes the connection rather than decoding
//     into another valid message. Messages are laid out in wire.go.
//   - Batching. Callers encode their own requests and queue them; one
//     writer goroutine per connection puts everything pending into one
//     vectored write. Small calls (heartbeats, votes) have their own queue
//     and overtake large appends; a pipeline's appends keep their order.
//     A batch of lazy messages only (empty appends carrying a commit index,
//     and their answers; heartbeats no read waits for, AppendEntriesMayWait)
//     waits up to Config.CoalesceDelay for company; Hurry ends the wait.
//   - Dispatch. The reader of a connection never waits for a range: each
//     request goes to a lane of its range (heartbeats, appends in arrival
//     order, the rest), and each busy lane has a goroutine that decodes its
//     requests and hands them to Raft one at a time.
//   - Never a made-up answer. A call whose connection breaks, whose range
//     is not open on the peer, or that gets no answer in time returns an
//     error and leaves its response untouched; a pipeline that loses a
//     request delivers no further futures (raft counts any delivered
//     future as contact with the follower, which feeds the leader lease).
//   - Leadership questions (link version 2, confirm.go). A linearizable
//     read's round asks each peer, in one message for every range of the
//     node reading at that moment, whether its replica is in the leader's
//     term and follows it; the peer answers on the reader from each
//     replica's state (SetLeadershipCheck). The range falls back to
//     raft.VerifyLeader's heartbeats when that is not a quorum of yes.
//   - Appends in the link's own layout (version 3, appendcodec.go):
//     AppendEntries requests and responses, almost all of a busy node's
//     messages, skip msgpack's reflection; everything else keeps it.
//   - Snapshots each travel on a connection of their own.
//   - Mixed versions. A peer that closes the hello unanswered runs a
//     release from before the link (its mux closes an unknown kind byte);
//     one that answers with no common version runs a later one. Both are
//     reached through the range's legacy transport, given to Open, which
//     also receives what such peers send; the link is tried again every
//     ProbeInterval. Old nodes dialling 'F' streams reach the legacy
//     transport as before, and its RPCs come out of the same Consumer.
//
// Close order: each RangeTransport, then the Link, then the mux.
package link
