package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// Client talks to a dialkv cluster. It is safe for concurrent use; create
// one per process and Close it when done.
//
// Locking: the pool's and the router's mu are leaves, never held together
// and never across a call to a server: the router fetches the table
// (through the pool) with its mu released.
type Client struct {
	pool        *pool
	router      *router // nil when routing is disabled
	maxAttempts int
	log         *slog.Logger
	// authn puts tokens on calls; nil without credentials. Streams renew
	// through it themselves (watch.go).
	authn *authenticator
	// Backoff bounds; fields so that tests can shrink them.
	backoffBase, backoffMax time.Duration
}

// New validates cfg and returns a Client. No connection is made until the
// first request.
func New(cfg Config) (*Client, error) {
	endpoints, err := normalizeEndpoints(cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	if cfg.MaxAttempts < 0 {
		return nil, fmt.Errorf("dialkv client: MaxAttempts %d is negative", cfg.MaxAttempts)
	}
	if cfg.DialTimeout < 0 {
		return nil, fmt.Errorf("dialkv client: DialTimeout %v is negative", cfg.DialTimeout)
	}
	locality, err := rpctypes.ParseLocality(cfg.Locality)
	if err != nil {
		return nil, fmt.Errorf("dialkv client: Locality: %w", err)
	}
	c := &Client{
		maxAttempts: cfg.MaxAttempts,
		log:         cfg.Logger,
		backoffBase: BackoffBase,
		backoffMax:  BackoffMax,
	}
	if c.maxAttempts == 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if cfg.DisableRetries {
		c.maxAttempts = 1
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout == 0 {
		dialTimeout = DefaultDialTimeout
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	authn := newAuthenticator(cfg)
	c.authn = authn
	c.pool = newPool(endpoints, func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr,
			grpc.WithTransportCredentials(creds),
			grpc.WithChainUnaryInterceptor(authn.unary),
			grpc.WithChainStreamInterceptor(authn.stream),
			grpc.WithConnectParams(grpc.ConnectParams{
				// gRPC's default reconnect backoff starts at 1s; a node
				// that restarted should be usable again sooner.
				Backoff: backoff.Config{
					BaseDelay:  100 * time.Millisecond,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   3 * time.Second,
				},
				MinConnectTimeout: dialTimeout,
			}),
		)
	})
	if !cfg.DisableRouting {
		c.router = newRouter(c.fetchRoutes, c.log, locality, endpoints)
	}
	// Create the connections now so a bad address fails here, not later.
	for _, ep := range endpoints {
		if _, err := c.pool.conn(ep); err != nil {
			return nil, fmt.Errorf("%w (closing: %v)", err, c.pool.close())
		}
	}
	return c, nil
}

// Close closes every connection. Methods called afterwards fail with
// ErrClosed.
func (c *Client) Close() error { return c.pool.close() }

// Endpoints returns the failover order, including leader addresses learnt
// from errors.
func (c *Client) Endpoints() []string { return c.pool.list() }

// rpc performs one attempt on cc; opts must be passed to the gRPC call.
type rpc func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) error

// invoke runs call under the retry policy of class. With a non-empty
// endpoint every attempt goes there. Otherwise, with a non-nil route and
// routing enabled, the first attempt goes to the node the routing table
// names for the key; the others, and every attempt when there is no route,
// follow the pool's sticky endpoint.
func (c *Client) invoke(ctx context.Context, op string, class opClass, endpoint string, route *routeSpec, call rpc) error {
	if err := ctx.Err(); err != nil {
		// Nothing was sent, so even a write's fate is known.
		return &Error{Op: op, Err: err}
	}
	if c.router == nil || endpoint != "" {
		route = nil
	}
	var (
		last    attemptResult
		lastEP  string
		unknown bool // some write attempt may have been applied
		spec    = route
		why     string // why the router picked the routed attempt's node
	)
	attempt := 1
	for ; attempt <= c.maxAttempts; attempt++ {
		ep := endpoint
		var (
			cc      *grpc.ClientConn
			err     error
			routed  bool
			version uint64
		)
		if route != nil {
			// Route the first attempt only: after a failure, the sticky
			// endpoint (which forwards) is the dependable path.
			var addr string
			var ok bool
			if addr, version, why, ok = c.router.pick(ctx, route); ok {
				if cc, err = c.pool.routedConn(addr); err == nil {
					ep, routed = addr, true
				} else if errors.Is(err, ErrClosed) {
					return &Error{Op: op, Endpoint: addr, Attempts: attempt, Indeterminate: unknown, Err: err}
				}
			}
			route = nil
		}
		if !routed {
			if ep == "" {
				ep, cc, err = c.pool.current()
			} else {
				cc, err = c.pool.conn(ep)
			}
			if err != nil {
				return &Error{Op: op, Endpoint: ep, Attempts: attempt, Indeterminate: unknown, Err: err}
			}
		}
		var p peer.Peer
		err = call(ctx, cc, grpc.Peer(&p))
		if err == nil {
			if routed {
				spec.chosen = why
			}
			return nil
		}
		last, lastEP = attemptResult{err: err, peer: p}, ep
		if class.isWrite() && !last.fateKnown() {
			unknown = true
		}
		if routed {
			switch {
			case unreachable(err):
				c.router.markDown(ep)
				c.router.invalidate(version)
			case staleRoute(err):
				c.router.invalidate(version)
			}
		}
		if attempt == c.maxAttempts || !last.shouldRetry(class) {
			break
		}
		next := ep
		if endpoint == "" {
			next = c.pool.advance(ep, leaderHint(err))
		}
		c.log.Debug("dialkv client: retrying", "op", op, "endpoint", ep, "routed", routed, "next", next,
			"attempt", attempt, "err", err)
		if err := sleep(ctx, retryDelay(c.backoffBase, c.backoffMax, attempt)); err != nil {
			return &Error{Op: op, Endpoint: lastEP, Attempts: attempt, Indeterminate: unknown, Err: last.err, Stop: err}
		}
	}
	return &Error{Op: op, Endpoint: lastEP, Attempts: min(attempt, c.maxAttempts), Indeterminate: unknown, Err: last.err}
}

func kv(cc *grpc.ClientConn) kvpb.KVClient { return kvpb.NewKVClient(cc) }

// Put writes value under key. Put is retried like a read, except after an
// INDETERMINATE or deadline error. WithLease attaches the key to a lease.
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...PutOption) (*kvpb.PutResponse, error) {
	req := &kvpb.PutRequest{Key: key, Value: value}
	for _, o := range opts {
		if o != nil {
			o(req)
		}
	}
	var resp *kvpb.PutResponse
	err := c.invoke(ctx, "put", classIdempotent, "", &routeSpec{key: key}, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).Put(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Get reads key. A missing key is an error for which IsNotFound is true.
func (c *Client) Get(ctx context.Context, key []byte, opts ...ReadOption) (*kvpb.GetResponse, error) {
	s := applyReadOptions(nil, opts)
	req := &kvpb.GetRequest{Key: key, Read: s.read}
	var resp *kvpb.GetResponse
	route := readRoute(key, req.Read)
	err := c.invoke(ctx, "get", classRead, "", route, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).Get(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	route.explain(resp.GetHeader())
	s.header(resp.GetHeader())
	return resp, nil
}

// Delete removes key; the response says whether it existed.
func (c *Client) Delete(ctx context.Context, key []byte) (*kvpb.DeleteResponse, error) {
	req := &kvpb.DeleteRequest{Key: key}
	var resp *kvpb.DeleteResponse
	err := c.invoke(ctx, "delete", classIdempotent, "", &routeSpec{key: key}, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).Delete(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// CompareAndSwap writes req.NewValue if the key holds req.ExpectedValue (or
// is absent, with ExpectMissing). A failed comparison is an error for which
// IsCompareFailed is true. It is retried only when provably not applied.
func (c *Client) CompareAndSwap(ctx context.Context, req *kvpb.CompareAndSwapRequest) (*kvpb.CompareAndSwapResponse, error) {
	if req == nil {
		req = &kvpb.CompareAndSwapRequest{}
	}
	var resp *kvpb.CompareAndSwapResponse
	err := c.invoke(ctx, "cas", classWrite, "", &routeSpec{key: req.GetKey()}, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).CompareAndSwap(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Scan reads one page of req. opts override req.Read; req is not modified.
func (c *Client) Scan(ctx context.Context, req *kvpb.ScanRequest, opts ...ReadOption) (*kvpb.ScanResponse, error) {
	page, s := scanRequest(req, opts)
	return c.scanPage(ctx, page, s)
}

func (c *Client) scanPage(ctx context.Context, req *kvpb.ScanRequest, s *readSettings) (*kvpb.ScanResponse, error) {
	var resp *kvpb.ScanResponse
	route := readRoute(scanKey(req), req.GetRead())
	err := c.invoke(ctx, "scan", classRead, "", route, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).Scan(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	route.explain(resp.GetHeader())
	s.header(resp.GetHeader())
	return resp, nil
}

// scanKey is the key a scan page starts at, which routes it.
func scanKey(req *kvpb.ScanRequest) []byte {
	if p := req.GetPrefix(); len(p) > 0 {
		return p
	}
	return req.GetStart()
}

// scanRequest copies req (nil means the whole key space) with opts applied.
func scanRequest(req *kvpb.ScanRequest, opts []ReadOption) (*kvpb.ScanRequest, *readSettings) {
	page := &kvpb.ScanRequest{}
	if req != nil {
		page = proto.CloneOf(req)
	}
	s := applyReadOptions(page.GetRead(), opts)
	page.Read = s.read
	return page, s
}
