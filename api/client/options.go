package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// Defaults applied by New to a zero Config field.
const (
	DefaultMaxAttempts = 6
	DefaultDialTimeout = 2 * time.Second
)

// Backoff between attempts. Exported as constants so the retry policy is
// visible in the documentation.
const (
	BackoffBase = 25 * time.Millisecond
	BackoffMax  = time.Second
)

// Config configures a Client.
type Config struct {
	// Endpoints are gRPC addresses (host:port) of dialkv nodes. At least one
	// is required; any node will do, requests find the leader from there.
	Endpoints []string
	// DialTimeout bounds establishing one connection. Zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// DisableRetries makes every method a single attempt.
	DisableRetries bool
	// MaxAttempts bounds the attempts of one method call, the first
	// included. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// DisableRouting turns off the routing cache: every request goes to the
	// sticky endpoint, which forwards it to the right range's leader.
	// Routing is on by default; see the package documentation.
	DisableRouting bool
	// Locality is where the client runs, ordered tiers as kvd --locality
	// takes them ("region=eu,zone=a"). Reads at the weaker levels go to
	// the replica sharing the most leading tiers with it; without one,
	// to the first endpoint that holds a replica. Empty: no locality.
	Locality string
	// Logger receives retries at debug level. Nil discards.
	Logger *slog.Logger
	// TLS, when set, connects over TLS with this configuration (its
	// RootCAs verify the nodes, its Certificates are the client
	// certificate a node with --client-cert-auth asks for). Each
	// connection's ServerName is the endpoint's host unless set here.
	// Nil: plaintext.
	TLS *tls.Config
	// Username and Password authenticate (Auth.Authenticate) on first use
	// and again when a node refuses the token (expired); Token is a token
	// to send as is. Empty: no credentials (see auth.go).
	Username, Password, Token string
}

// PutOption adjusts one Put.
type PutOption func(*kvpb.PutRequest)

// WithLease attaches the key to lease id (from Grant): the key is deleted
// when the lease expires or is revoked. A lease that has ended fails the
// put with LEASE_NOT_FOUND (IsNotFound), and nothing is written.
func WithLease(id int64) PutOption {
	return func(r *kvpb.PutRequest) { r.Lease = id }
}

// ReadOption adjusts the consistency of one read (Get, Scan, ScanAll).
type ReadOption func(*readSettings)

type readSettings struct {
	read *kvpb.ReadOptions
	// onHeader sees the header of every page a read returns.
	onHeader func(*kvpb.ReadHeader)
}

// WithConsistency selects the read's consistency level.
func WithConsistency(c kvpb.Consistency) ReadOption {
	return func(s *readSettings) { s.read.Consistency = c }
}

// WithMaxStaleness bounds how old a BOUNDED read's state may be.
func WithMaxStaleness(d time.Duration) ReadOption {
	return func(s *readSettings) { s.read.MaxStaleness = durationpb.New(d) }
}

// WithSessionToken passes the token of an earlier write or read, so that a
// SESSION read observes at least that state.
func WithSessionToken(token string) ReadOption {
	return func(s *readSettings) { s.read.SessionToken = token }
}

// WithExplain asks the replica that serves the read to explain itself
// (ReadHeader.explain): its role, why the read reached it, and why the
// staleness of its answer is within what was asked. When the client routed
// the read, chosen_because starts with why it picked that node.
func WithExplain() ReadOption {
	return func(s *readSettings) { s.read.Explain = true }
}

// WithPageHeader calls fn with the header of every response a read returns:
// once for Get and Scan, once per page for ScanAll, before that page's keys
// are passed on. It exists because ScanAll's callback sees only keys.
func WithPageHeader(fn func(*kvpb.ReadHeader)) ReadOption {
	return func(s *readSettings) { s.onHeader = fn }
}

// applyReadOptions layers opts over base (which may be nil) without
// modifying base.
func applyReadOptions(base *kvpb.ReadOptions, opts []ReadOption) *readSettings {
	s := &readSettings{read: &kvpb.ReadOptions{}}
	if base != nil {
		s.read.Consistency = base.GetConsistency()
		s.read.MaxStaleness = base.GetMaxStaleness()
		s.read.SessionToken = base.GetSessionToken()
		s.read.Explain = base.GetExplain()
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	return s
}

func (s *readSettings) header(h *kvpb.ReadHeader) {
	if s.onHeader != nil {
		s.onHeader(h)
	}
}

// ParseConsistency parses a level as users type it: linearizable, bounded,
// session or stale, in any case. The empty string means linearizable.
func ParseConsistency(s string) (kvpb.Consistency, error) {
	if c, ok := rpctypes.LookupConsistency(strings.TrimSpace(s)); ok {
		return c, nil
	}
	return kvpb.Consistency_CONSISTENCY_UNSPECIFIED,
		fmt.Errorf("unknown consistency level %q (want linearizable, bounded, session or stale)", s)
}

// ConsistencyName returns the lower-case name ParseConsistency accepts.
// UNSPECIFIED is served as linearizable and is named so.
func ConsistencyName(c kvpb.Consistency) string {
	if n, ok := rpctypes.ConsistencyName(c); ok {
		return n
	}
	return fmt.Sprintf("consistency(%d)", int32(c))
}
