// Package client is the Go client library for dialkv. It speaks the kv.v1
// gRPC services (KV and Cluster) to a list of endpoints and hides which node
// leads which range: it sends each request to the node the cluster's
// routing table names, and otherwise sticks to one endpoint, which forwards
// the request, moving on only when that endpoint cannot serve it.
//
// # Routing
//
// The key space is split into ranges, each replicated on a few nodes with
// one leader. Unless Config.DisableRouting is set, the Client fetches the
// routing table (the Ranges RPC: ranges, their replicas and leader hints,
// and the nodes' addresses) from its sticky endpoint on the first keyed
// request, caches it for RoutingTTL, and refreshes it in the background
// once older. The first attempt of Put, Delete, CompareAndSwap and of
// linearizable Get and Scan goes to the leader of the key's range (a scan
// is routed by its start key or prefix); bounded, session and stale reads
// go to the nearest replica, leader included: the one sharing the most
// leading locality tiers with Config.Locality, then the first of
// Config.Endpoints that holds one (so a client given one node reads from
// it when it can), then the followers in turn, the leader only when no
// follower is usable. WithExplain's answer starts with why. Removed nodes, nodes without a dialable address and nodes that
// recently could not be reached are skipped.
//
// Routing is only an optimisation: any node serves any request by
// forwarding it. A request that cannot be routed goes to the sticky
// endpoint. When a routed attempt fails with WRONG_RANGE, UNKNOWN_RANGE,
// NOT_LEADER, NO_LEADER, SHUTTING_DOWN or a connection error, the cached
// table is dropped (the next request fetches a fresh one), and, if the
// retry policy below allows another attempt, it goes to the sticky
// endpoint, or to the leader the error names. Routing never adds attempts
// or retries a request the policy would not. Connections opened for
// routing count against the same cap as the endpoint list (64) and do not
// join the failover order. SplitRange, AddMember and RemoveMember drop the
// cached table; Ranges replaces it.
//
// # Failover
//
// The Client keeps one lazily dialled connection per endpoint and a sticky
// current endpoint. When a request fails with an error worth retrying, the
// next attempt goes to the leader named in the error's leader_addr metadata
// (rpctypes.MetaLeaderAddr) when there is one, adding that address to the
// pool if it is new, and otherwise to the next endpoint in the list.
// Attempts are separated by exponential backoff with jitter (from 25ms,
// capped at 1s) and bounded both by Config.MaxAttempts and by the caller's
// context. Status is the exception: it asks the one endpoint it is given.
//
// # Retry policy
//
// dialkv is a database, so a retry must never apply a write twice where that
// would change the outcome. Each method belongs to one of three classes:
//
//   - Reads (Get, Scan, ScanAll, Status, Members, Ranges, and TxnStatus,
//     whose answer is the same when asked again) retry whenever
//     rpctypes.Retryable says the replica or the cluster was unavailable.
//   - Idempotent writes (Put, Delete) retry on the same errors, except
//     INDETERMINATE and DeadlineExceeded: writing the same value twice is
//     harmless, but a timed-out write is left for the caller to decide.
//   - Conditional and membership writes (CompareAndSwap, Txn, AddMember,
//     RemoveMember, SplitRange) retry only when the write provably did not
//     happen: the server answered NOT_LEADER, NO_LEADER, SHUTTING_DOWN,
//     WRONG_RANGE or UNKNOWN_RANGE (refused before anything was proposed,
//     or rejected by the range's state machine without effect), or the
//     connection could not be established at all. The latter is
//     rpctypes.NeverSent, dialkv's one conservative rule: codes.Unavailable
//     with no detail, no peer recorded for the RPC (gRPC never handed it
//     to a transport), and gRPC's text for a dial that failed. Anything
//     else, including a connection that broke while the request was in
//     flight, is not retried.
//
// A write that failed without proof that it was not applied (INDETERMINATE,
// a deadline, a broken connection, an internal error) returns an error for
// which IsIndeterminate is true: the write may or may not have happened, and
// the caller must read the key to find out.
//
// # Watch and leases
//
// Watch streams the writes to a span of keys and resumes by itself when
// its stream breaks, from the cursor of the last message it delivered, so
// no event is lost or repeated; KeepAlive renews a lease in the background
// every third of its TTL, moving to the next endpoint when its stream
// breaks. Both give up after StreamRetries failed attempts in a row. Put
// takes WithLease. Grant and Revoke are retried only when provably not
// applied; a keepalive is retried like a read.
//
// # Errors
//
// Errors returned by Client methods are *Error values wrapping the gRPC
// status of the last attempt, so status.FromError, rpctypes.ReasonOf and the
// Is* helpers of this package all see through them.
package client
