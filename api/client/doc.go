// Package client is the Go client library for dialkv. It speaks the kv.v1
// gRPC services (KV and Cluster) to a list of endpoints and hides which node
// is the leader: a Client sticks to one endpoint and moves on only when that
// endpoint says it cannot serve the request.
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
//   - Reads (Get, Scan, ScanAll, Status, Members) retry whenever
//     rpctypes.Retryable says the replica or the cluster was unavailable.
//   - Idempotent writes (Put, Delete) retry on the same errors, except
//     INDETERMINATE and DeadlineExceeded: writing the same value twice is
//     harmless, but a timed-out write is left for the caller to decide.
//   - Conditional and membership writes (CompareAndSwap, AddMember,
//     RemoveMember) retry only when the write provably did not happen: the
//     server answered NOT_LEADER, NO_LEADER or SHUTTING_DOWN, or the
//     connection could not be established at all. The latter is recognised
//     conservatively: codes.Unavailable with no ErrorInfo detail, no peer
//     recorded for the RPC (gRPC never handed it to a transport), and a
//     message containing gRPC's "Error while dialing" or "connection
//     refused". Anything else, including a connection that broke while the
//     request was in flight, is not retried.
//
// A write that failed without proof that it was not applied (INDETERMINATE,
// a deadline, a broken connection, an internal error) returns an error for
// which IsIndeterminate is true: the write may or may not have happened, and
// the caller must read the key to find out.
//
// # Errors
//
// Errors returned by Client methods are *Error values wrapping the gRPC
// status of the last attempt, so status.FromError, rpctypes.ReasonOf and the
// Is* helpers of this package all see through them.
package client
