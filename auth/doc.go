// Package auth decides who may do what from state every node agrees on.
//
// The users, roles, permissions, the enabled flag, the token signing key and
// the revocation bound all live in one State value that the server stores in
// the meta range, so every node that has applied the same revision answers
// every question here the same way: Authorize, AuthorizeRange and
// AuthorizeAdmin for requests, Issuer.Verify for tokens issued by any node,
// Authenticate for passwords.
//
// State is immutable: each mutation (AddUser, GrantPermission, ...) returns
// a new State and leaves the receiver untouched, so a failed or rejected
// mutation changes nothing and callers may share a State between goroutines
// without locks. Mutations are deterministic (no clock, no randomness: the
// caller hashes passwords and makes signing keys before proposing), so the
// same Mutation applied on every replica yields the same State.
//
// Revocation is bounded rather than instant: a node honours permissions only
// while its state is known to have been current within the state's
// revocation bound (Freshness), and every mutation that removes access
// reports that bound in its Result.
package auth
