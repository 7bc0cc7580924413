// Package replication is the node host: it runs every range replica a node
// holds over one Raft port, bootstraps or joins the cluster, changes
// membership, and gets each request to the replica that may serve it.
//
// A client may send any request to any node. Node serves it locally when it
// can (a write or linearizable read on the range leader, a stale read on any
// replica, a session read on a replica that has applied the session's
// index) and otherwise forwards it over the internal gRPC service that
// shares the Raft port (see Mux): a node without a replica of the key's
// range sends it to one that has (hop 1), and that replica sends it on to
// the leader if it must (hop 2). A forwarded request carries
// rpctypes.ForwardedHeader with its hop count, and a node refuses to
// forward one that has made maxHops (2) hops already (NOT_LEADER or
// WRONG_RANGE, both of which clients retry), so a request makes at most
// two extra hops and a stale leader hint cannot loop it.
//
// Node speaks kvpb request and response types but returns plain errors
// (the sentinels below, shard's, or a peer's gRPC status); package api
// turns them into gRPC codes and HTTP statuses in one table.
//
// Raft messages between nodes travel in checked frames (package frame),
// on one shared connection per peer (package link) or, with
// Config.PerRangeStreams, on each range's own streams (framing.go): a
// sequence number and a CRC-32C per frame, so a stream with a hole, a
// repeat or a damaged byte is closed instead of decoded into a different,
// valid Raft message.
//
// Watches (watch.go) merge one feed per range, each read from any replica
// of it, into one stream with a per-range cursor; leases (lease.go) are
// records in the meta range whose expiry the meta leader decides on its
// own monotonic clock. See docs/design/watch-and-leases.md.
package replication
