package client

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/kvpb"
)

// authMethod is the one RPC sent without a token.
const authMethod = "/kv.v1.Auth/Authenticate"

// authenticator puts a token on every call: Config.Token as given, or one
// from Authenticate with Config.Username and Config.Password, fetched on
// first use and fetched again, once per call, when a node answers
// UNAUTHENTICATED (the token expired, or the user's password or roles
// changed and the node refused it).
type authenticator struct {
	user, password string

	mu    sync.Mutex
	token string
	// off: the last Authenticate said auth is off, so calls go out bare
	// until one is refused as UNAUTHENTICATED.
	off bool
}

// newAuthenticator returns nil when cfg carries no credentials: calls go
// out bare (a client certificate, if any, still identifies the user).
func newAuthenticator(cfg Config) *authenticator {
	if cfg.Username == "" && cfg.Token == "" {
		return nil
	}
	return &authenticator{user: cfg.Username, password: cfg.Password, token: cfg.Token}
}

// current returns the token to send, authenticating through cc when there
// is none yet.
func (a *authenticator) current(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	a.mu.Lock()
	tok, off := a.token, a.off
	a.mu.Unlock()
	if tok != "" || off {
		return tok, nil
	}
	return a.renew(ctx, cc, "")
}

// renew authenticates again unless another call already replaced stale.
func (a *authenticator) renew(ctx context.Context, cc *grpc.ClientConn, stale string) (string, error) {
	a.mu.Lock()
	if a.token != stale {
		tok := a.token
		a.mu.Unlock()
		return tok, nil
	}
	a.mu.Unlock()
	resp, err := kvpb.NewAuthClient(cc).Authenticate(ctx, &kvpb.AuthenticateRequest{User: a.user, Password: a.password})
	if status.Code(err) == codes.InvalidArgument {
		// Auth is off (or the node serves none): no token is needed, and
		// none is issued. Calls go out bare until a node asks for one.
		a.mu.Lock()
		a.off = true
		a.mu.Unlock()
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("dialkv client: authenticate as %q: %w", a.user, err)
	}
	a.mu.Lock()
	a.token, a.off = resp.Token, false
	a.mu.Unlock()
	return resp.Token, nil
}

func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// unary is the client's interceptor: token on, and one renewal on
// UNAUTHENTICATED when the token came from a password.
func (a *authenticator) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if a == nil || method == authMethod {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	tok, err := a.current(ctx, cc)
	if err != nil {
		return err
	}
	err = invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
	if status.Code(err) != codes.Unauthenticated || a.user == "" {
		return err
	}
	if tok, err = a.renew(ctx, cc, tok); err != nil {
		return err
	}
	return invoker(withToken(ctx, tok), method, req, reply, cc, opts...)
}

// stream puts the token on a stream. A stream's refusal arrives with its
// first Recv, after this returns, so renewing on UNAUTHENTICATED is the
// stream's owner's to do (renewAfter).
func (a *authenticator) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if a == nil {
		return streamer(ctx, desc, cc, method, opts...)
	}
	tok, err := a.current(ctx, cc)
	if err != nil {
		return nil, err
	}
	return streamer(withToken(ctx, tok), desc, cc, method, opts...)
}

// renewAfter authenticates again after a stream through cc was refused
// as UNAUTHENTICATED. It reports whether a new stream may carry a fresh
// token: false without a password to authenticate with.
func (a *authenticator) renewAfter(ctx context.Context, cc *grpc.ClientConn, err error) bool {
	if a == nil || a.user == "" || status.Code(err) != codes.Unauthenticated {
		return false
	}
	a.mu.Lock()
	stale := a.token
	a.mu.Unlock()
	_, rerr := a.renew(ctx, cc, stale)
	return rerr == nil
}

// Auth runs fn with the Auth service of a node, retried as a read; with
// write (a mutation) retried only when provably not applied. kvctl's
// auth, user and role commands reach the cluster through it.
func (c *Client) Auth(ctx context.Context, op string, write bool, fn func(context.Context, kvpb.AuthClient, ...grpc.CallOption) error) error {
	class := classRead
	if write {
		class = classWrite
	}
	return c.invoke(ctx, op, class, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
		return fn(ctx, kvpb.NewAuthClient(cc), opts...)
	})
}

// IsAuthError reports a request refused for who made it: no, a bad or an
// expired token (codes.Unauthenticated), or a user without the permission
// (codes.PermissionDenied).
func IsAuthError(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}
