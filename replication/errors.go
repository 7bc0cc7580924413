package replication

import "errors"

var (
	// ErrNoLeader is returned when the range has no known leader to serve
	// or forward to (an election is under way, or quorum is lost).
	ErrNoLeader = errors.New("replication: no leader")

	// ErrKeyOutOfRange is returned when no range on this node holds the key.
	ErrKeyOutOfRange = errors.New("replication: key outside the ranges of this node")

	// ErrUnknownNode is returned for a membership change naming a node that
	// is not a member.
	ErrUnknownNode = errors.New("replication: unknown node")

	// ErrMemberConflict is returned when adding a node id or address that a
	// different member already uses.
	ErrMemberConflict = errors.New("replication: member conflict")

	// ErrSessionNotMet is returned when a session read's token is ahead of
	// what this replica applied within the wait allowed.
	ErrSessionNotMet = errors.New("replication: replica has not applied the session's index")

	// ErrStaleReplica is returned when a bounded read cannot be served by
	// this replica within its max_staleness.
	ErrStaleReplica = errors.New("replication: replica is staler than max_staleness")

	// ErrUnknownRange is returned for a request naming a range id the
	// cluster does not have.
	ErrUnknownRange = errors.New("replication: unknown range")

	// ErrStillAReplica is returned by DropReplica when the range's
	// descriptor still lists this node: only a removed replica is deleted.
	ErrStillAReplica = errors.New("replication: the range still lists this node as a replica")

	// ErrBadSessionToken is returned for a session token that does not
	// parse, names more ranges than exist, or names an index its range
	// has not committed (see session.go).
	ErrBadSessionToken = errors.New("replication: invalid session token")
)

// ErrBadSplitKey is returned for a split key outside the range or at its
// start.
var ErrBadSplitKey = errors.New("replication: bad split key")

var (
	// ErrCompacted is returned for a watch cursor older than every replica
	// of one of its ranges retains (events were trimmed, or the replica
	// installed a snapshot): the client re-reads and watches from now.
	ErrCompacted = errors.New("replication: watch cursor is older than the retained events")

	// ErrLeaseNotFound is returned for a lease id that was never granted,
	// has expired or was revoked.
	ErrLeaseNotFound = errors.New("replication: lease not found")

	// ErrFeatureUnavailable is returned for a request that needs a feature
	// some member's release lacks (during a rolling upgrade).
	ErrFeatureUnavailable = errors.New("replication: not every node supports this yet")
)
