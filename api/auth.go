package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/dialkv/dialkv/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Where requests are authorised: in the Service methods of the node the
// client reached, before the request is routed. A request that node
// forwards to another (on the peer port) is not checked again there: the
// peer port trusts its callers, who are other nodes (authenticated by
// their certificates once peer TLS is on), as it already does for
// Internal. So no user identity travels between nodes, and one decision,
// made on state the entry node confirmed within the revocation bound,
// covers the request wherever it is served. Without peer TLS, whoever can
// reach a peer port can bypass auth, as they could already rewrite the
// meta range.

// AuthBackend holds the cluster's auth state. replication.AuthStore
// implements it.
type AuthBackend interface {
	// Check returns the held state, and auth.ErrAuthStale when it was not
	// confirmed current within its revocation bound at now.
	Check(now time.Time) (*auth.State, error)
	// Mutate applies a mutation to the cluster's state.
	Mutate(ctx context.Context, m auth.Mutation) (auth.Result, error)
	// Refresh reads the cluster's state now and holds it.
	Refresh(ctx context.Context) error
}

// SetAuth turns authorisation on: every request is decided by a's state,
// and tokens live ttl (zero: auth.DefaultTokenTTL). Call it before
// serving.
func (s *Service) SetAuth(a AuthBackend, ttl time.Duration) {
	s.auth, s.issuer = a, &auth.Issuer{TTL: ttl}
}

// SetPasswordCost sets the bcrypt cost of the passwords this node hashes
// (zero: bcrypt's default). For tests: the default costs each hash and
// each sign-in tens of milliseconds of CPU.
func (s *Service) SetPasswordCost(cost int) { s.passwordCost = cost }

// AuthorizationHeader is the gRPC metadata key and HTTP header carrying a
// token, as "Bearer <token>" or the bare token.
const AuthorizationHeader = "authorization"

// credentials are what a request presented: a token, and the user named
// by a verified client certificate.
type creds struct {
	token    string
	certUser string
	// node is the node id a verified node certificate names.
	node string
}

type credsKey struct{}

// peerPortKey marks a request that arrived on the peer port.
type peerPortKey struct{}

// withHTTPCreds records an HTTP request's credentials for the Service.
func withHTTPCreds(ctx context.Context, header string, cs *tls.ConnectionState) context.Context {
	c := creds{token: bearer(header)}
	c.certUser, c.node = certNames(cs)
	return context.WithValue(ctx, credsKey{}, c)
}

func bearer(v string) string {
	v = strings.TrimSpace(v)
	if t, ok := strings.CutPrefix(v, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if t, ok := strings.CutPrefix(v, "bearer "); ok {
		return strings.TrimSpace(t)
	}
	return v
}

// requestCreds returns what the request presented, over HTTP or gRPC.
func requestCreds(ctx context.Context) creds {
	if c, ok := ctx.Value(credsKey{}).(creds); ok {
		return c
	}
	var c creds
	if v := metadata.ValueFromIncomingContext(ctx, AuthorizationHeader); len(v) > 0 {
		c.token = bearer(v[len(v)-1])
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.certUser, c.node = certNames(&info.State)
		}
	}
	return c
}

// certNames returns the user a client certificate names (its URI SAN
// dialkv://user/<name>, else its common name) or the node it names
// (dialkv://node/<id>).
//
// The certificate is trusted as verified because the client port's TLS
// configuration (tlsconf.ServerConfig) verifies every certificate a client
// presents, in VerifyConnection, and refuses the handshake otherwise; it
// asks for none when it has no CA. crypto/tls's VerifiedChains stays empty
// with that configuration, so it cannot be the test here.
func certNames(cs *tls.ConnectionState) (user, node string) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", ""
	}
	return namesFromCert(cs.PeerCertificates[0])
}

func namesFromCert(c *x509.Certificate) (user, node string) {
	dialkvURI := false
	for _, u := range c.URIs {
		if u.Scheme != "dialkv" {
			continue
		}
		dialkvURI = true
		name, ok := strings.CutPrefix(u.Path, "/")
		if !ok || name == "" {
			continue
		}
		switch u.Host {
		case "user":
			return name, ""
		case "node":
			node = name
		}
	}
	if dialkvURI {
		return "", node
	}
	return c.Subject.CommonName, ""
}

// errNoCredentials: auth is on and the request presented nothing.
var errNoCredentials = fmt.Errorf("%w: no token (authorization: Bearer <token>) or client certificate; authenticate first", auth.ErrUnauthenticated)

// authState returns the state to decide a request with, nil when the
// service has no auth or the request came from a peer.
func (s *Service) authState(ctx context.Context) (*auth.State, error) {
	if s.auth == nil || ctx.Value(peerPortKey{}) != nil {
		return nil, nil
	}
	return s.auth.Check(time.Now())
}

// identify returns the user the request is made as: the token's, or else
// the client certificate's.
func (s *Service) identify(ctx context.Context, st *auth.State) (string, error) {
	c := requestCreds(ctx)
	switch {
	case c.token != "":
		return s.issuer.Verify(c.token, st)
	case c.certUser != "":
		if _, ok := st.User(c.certUser); !ok {
			return "", fmt.Errorf("%w: the client certificate's user %q does not exist", auth.ErrUnauthenticated, c.certUser)
		}
		return c.certUser, nil
	}
	return "", errNoCredentials
}

// authorize decides a request with decide(state, user), once the node's
// state is confirmed fresh and, with auth enabled, the user identified.
// With auth disabled everything is allowed, but only on a fresh state: a
// node that cannot confirm auth is still disabled refuses.
func (s *Service) authorize(ctx context.Context, decide func(st *auth.State, user string) error) error {
	st, err := s.authState(ctx)
	if st != nil {
		if tok := requestCreds(ctx).token; tok != "" && auth.TokenRevision(tok) > st.Revision() {
			// The token was issued at a state this node has not seen
			// yet (see auth.TokenRevision): catch up before deciding.
			if rerr := s.auth.Refresh(ctx); rerr == nil {
				st, err = s.authState(ctx)
			}
		}
	}
	if err != nil || st == nil || !st.Enabled() {
		return err
	}
	user, err := s.identify(ctx, st)
	if err != nil {
		return err
	}
	return decide(st, user)
}

func (s *Service) authorizeKey(ctx context.Context, op auth.Op, key []byte) error {
	return s.authorize(ctx, func(st *auth.State, user string) error { return st.Authorize(user, op, key) })
}

func (s *Service) authorizeRange(ctx context.Context, op auth.Op, start, end []byte) error {
	return s.authorize(ctx, func(st *auth.State, user string) error { return st.AuthorizeRange(user, op, start, end) })
}

func (s *Service) authorizeAdmin(ctx context.Context, verb auth.Verb) error {
	if (verb == auth.VerbMembership || verb == auth.VerbStatus) && requestCreds(ctx).node != "" {
		// A node joining a TLS cluster adds itself through a member's
		// client port with its node certificate (replication's
		// announceJoin) and lists the members there to find the meta
		// range (peersFromSeed: Members is a status verb); the cluster's
		// CA vouched for it. Without the listing, a node that rejoined a
		// cluster with auth on never confirmed its auth state and refused
		// every request (make jepsen TLS=1, membership nemesis).
		return nil
	}
	return s.authorize(ctx, func(st *auth.State, user string) error { return st.AuthorizeAdmin(user, verb) })
}

// scanBounds is the key range a scan reads: its prefix's keys, or
// [start, end) with an empty end meaning the end of the key space.
func scanBounds(prefix, start, end []byte) ([]byte, []byte) {
	if len(prefix) > 0 {
		return prefix, auth.PrefixEnd(prefix)
	}
	return start, end
}

// markPeerUnary and markPeerStream mark requests on the peer port, which
// are not authorised again (see the top of this file).
func markPeerUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(context.WithValue(ctx, peerPortKey{}, true), req)
}

func markPeerStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &cleanStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), peerPortKey{}, true)})
}
