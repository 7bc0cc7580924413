package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// DefaultRMWAttempts bounds how often RMW tries a read-modify-write.
const DefaultRMWAttempts = 10

// statusAsks bounds how often RMW asks for the outcome of a transaction
// whose answer it lost before it gives up and reports it indeterminate.
const statusAsks = 3

// ErrRMWExhausted: RMW tried as often as it may and every attempt's reads
// had changed before it could commit (or it met other transactions'
// locks). Nothing of the last attempt was applied.
var ErrRMWExhausted = errors.New("dialkv client: read-modify-write gave up: its reads kept changing")

// errCompareFailed marks an RMW attempt whose compares did not hold.
var errCompareFailed = errors.New("the keys read changed before the commit")

// NewTxnID returns a fresh transaction id (24 random hex digits after
// "c-"), for a caller that may need TxnStatus after losing an answer.
func NewTxnID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "c-" + hex.EncodeToString(b[:])
}

// TxnKey is a key req touches: its first compare's, else its first
// operation's. It routes the request, and names where to ask TxnStatus
// for the transaction's outcome.
func TxnKey(req *kvpb.TxnRequest) []byte {
	if cs := req.GetCompares(); len(cs) > 0 {
		return cs[0].GetKey()
	}
	for _, ops := range [][]*kvpb.TxnOp{req.GetSuccess(), req.GetFailure()} {
		for _, o := range ops {
			switch {
			case o.GetPut() != nil:
				return o.GetPut().GetKey()
			case o.GetDelete() != nil:
				return o.GetDelete().GetKey()
			case o.GetGet() != nil:
				return o.GetGet().GetKey()
			case o.GetScan() != nil:
				return scanKey(o.GetScan())
			}
		}
	}
	return nil
}

// Txn runs a transaction: if every compare holds, the success operations,
// else the failure ones, atomically, in one range or across ranges. It is
// retried only when provably not applied. An error for which
// IsIndeterminate is true leaves the outcome unknown: with req.Id set
// (NewTxnID), TxnStatus(ctx, req.Id, key, true) settles it. A transaction
// that met other transactions' locks and did nothing is an error for
// which IsTxnConflict is true; running it again is safe.
func (c *Client) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if req == nil {
		req = &kvpb.TxnRequest{}
	}
	var resp *kvpb.TxnResponse
	err := c.invoke(ctx, "txn", classWrite, "", &routeSpec{key: TxnKey(req)}, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).Txn(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// TxnStatus tells what became of transaction id: COMMITTED (with whether
// its compares held), ABORTED or PENDING. key is any key the transaction
// touched; a single-range transaction's outcome is found only through
// it. With abortIfPending a pending transaction is aborted, so the answer
// is final. Asking again gives the same answer, so it is retried as a
// read is.
func (c *Client) TxnStatus(ctx context.Context, id string, key []byte, abortIfPending bool) (*kvpb.TxnStatusResponse, error) {
	req := &kvpb.TxnStatusRequest{Id: id, Key: key, AbortIfPending: abortIfPending}
	var route *routeSpec
	if len(key) > 0 {
		route = &routeSpec{key: key}
	}
	var resp *kvpb.TxnStatusResponse
	err := c.invoke(ctx, "txn status", classRead, "", route, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = kv(cc).TxnStatus(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// IsTxnConflict reports a transaction that kept meeting other
// transactions' locks, or whose id was declared aborted before it could
// apply (TXN_CONFLICT): nothing of it was applied.
func IsTxnConflict(err error) bool {
	return err != nil && rpctypes.ReasonOf(err) == rpctypes.ReasonTxnConflict
}

// IsCrossRange reports a transaction asking for what only one range can
// do, a scan over keys of several ranges (CROSS_RANGE).
func IsCrossRange(err error) bool {
	return err != nil && rpctypes.ReasonOf(err) == rpctypes.ReasonCrossRange
}

// TxnRead is one key as RMW read it.
type TxnRead struct {
	Key    []byte
	Value  []byte
	Exists bool
	// Where the value was written: its range and the index there. The
	// commit compares both, so an attempt commits only if no write to the
	// key came between (a value written back to what it was included).
	RangeID, Revision uint64
}

// RMWOption configures RMW.
type RMWOption func(*rmwSettings)

type rmwSettings struct{ attempts int }

// WithRMWAttempts sets how many times RMW may try (default
// DefaultRMWAttempts; at least 1).
func WithRMWAttempts(n int) RMWOption {
	return func(s *rmwSettings) { s.attempts = max(n, 1) }
}

// RMW is a read-modify-write transaction. It reads keys (linearizable),
// calls fn with what it read (a missing key has Exists false), and
// commits fn's operations in one transaction whose compares check that
// every key read is still as it was: its (range, revision), or still
// missing. So the operations apply only on the values fn saw, atomically,
// even across ranges.
//
// An attempt whose reads changed meanwhile, or that met other
// transactions (TXN_CONFLICT), is tried again with fresh reads (the
// failed transaction's own reads when it brought them back) after a
// backoff, up to DefaultRMWAttempts times; after that RMW fails with
// ErrRMWExhausted. fn may therefore run several times and must have no
// other effects; it may also see values of different keys that never
// coexisted, since only the attempt that commits is validated. An error
// from fn ends RMW and is returned as it is.
//
// Each attempt is a transaction with its own id. When its answer is lost
// (IsIndeterminate), RMW asks TxnStatus with abort_if_pending before it
// goes on: COMMITTED ends RMW with a response carrying Succeeded and Id
// only (the operations' results are lost with the answer), ABORTED means
// the attempt did nothing and is retried. So no attempt applies twice.
// When even the status cannot be learnt, the error is indeterminate and
// names the transaction id to ask about.
func (c *Client) RMW(ctx context.Context, keys []string, fn func(reads map[string]TxnRead) ([]*kvpb.TxnOp, error), opts ...RMWOption) (*kvpb.TxnResponse, error) {
	s := rmwSettings{attempts: DefaultRMWAttempts}
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	keys = dedupe(keys)
	var (
		reads   map[string]TxnRead
		lastErr error
	)
	for attempt := 1; attempt <= s.attempts; attempt++ {
		if reads == nil {
			var err error
			if reads, err = c.rmwRead(ctx, keys); err != nil {
				return nil, err
			}
		}
		ops, err := fn(reads)
		if err != nil {
			return nil, err
		}
		req := rmwRequest(keys, reads, ops)
		resp, err := c.Txn(ctx, req)
		switch {
		case err == nil && resp.GetSucceeded():
			return resp, nil
		case err == nil:
			lastErr = errCompareFailed
			reads = rereads(keys, resp)
		case IsTxnConflict(err):
			lastErr, reads = err, nil
		case IsIndeterminate(err):
			st, serr := c.settle(ctx, req)
			if serr != nil {
				return nil, fmt.Errorf("rmw: transaction %s: %w (asking its status: %w)", req.GetId(), err, serr)
			}
			if st.GetState() == kvpb.TxnState_TXN_STATE_COMMITTED && st.GetSucceeded() {
				return &kvpb.TxnResponse{Succeeded: true, Id: req.GetId()}, nil
			}
			// ABORTED, or COMMITTED on compares that failed: nothing
			// was written.
			lastErr, reads = fmt.Errorf("rmw: transaction %s: %s after %w", req.GetId(), TxnStateName(st.GetState()), err), nil
		default:
			return nil, err
		}
		if attempt == s.attempts {
			break
		}
		if err := sleep(ctx, retryDelay(c.backoffBase, c.backoffMax, attempt)); err != nil {
			return nil, fmt.Errorf("rmw: %w (after %d attempts; last: %w)", err, attempt, lastErr)
		}
	}
	return nil, fmt.Errorf("%w (%d attempts; last: %w)", ErrRMWExhausted, s.attempts, lastErr)
}

// TxnStateName spells a transaction state: COMMITTED, ABORTED, PENDING.
func TxnStateName(s kvpb.TxnState) string {
	switch s {
	case kvpb.TxnState_TXN_STATE_COMMITTED:
		return "COMMITTED"
	case kvpb.TxnState_TXN_STATE_ABORTED:
		return "ABORTED"
	case kvpb.TxnState_TXN_STATE_PENDING:
		return "PENDING"
	}
	return fmt.Sprintf("UNKNOWN(%d)", s)
}

// settle learns the final outcome of req, whose answer was lost, by
// asking with abort_if_pending: a bounded number of times, since the
// cluster that lost the answer may still be electing a leader.
func (c *Client) settle(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnStatusResponse, error) {
	var err error
	for ask := 1; ; ask++ {
		var st *kvpb.TxnStatusResponse
		st, err = c.TxnStatus(ctx, req.GetId(), TxnKey(req), true)
		if err == nil && st.GetState() != kvpb.TxnState_TXN_STATE_PENDING {
			return st, nil
		}
		if err == nil {
			err = fmt.Errorf("transaction %s still PENDING after abort_if_pending", req.GetId())
		}
		if ask == statusAsks {
			return nil, err
		}
		if serr := sleep(ctx, retryDelay(c.backoffBase, c.backoffMax, ask)); serr != nil {
			return nil, fmt.Errorf("%w (then: %w)", err, serr)
		}
	}
}

func dedupe(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// rmwRead reads keys, linearizably and concurrently.
func (c *Client) rmwRead(ctx context.Context, keys []string) (map[string]TxnRead, error) {
	reads := make(map[string]TxnRead, len(keys))
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		first error
	)
	for _, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := TxnRead{Key: []byte(k)}
			resp, err := c.Get(ctx, []byte(k))
			switch {
			case err == nil:
				r.Value, r.Exists = resp.GetKv().GetValue(), true
				r.RangeID, r.Revision = resp.GetHeader().GetRangeId(), resp.GetKv().GetRevision()
			case IsNotFound(err):
			default:
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("rmw: reading %q: %w", k, err)
				}
				mu.Unlock()
				return
			}
			mu.Lock()
			reads[k] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return reads, nil
}

// rmwRequest is one attempt: compares that hold only if every key is as
// read, fn's operations on success, and on failure a get of every key, so
// that the next attempt starts from what the transaction saw instead of
// reading again (when the limit on operations leaves room for them).
func rmwRequest(keys []string, reads map[string]TxnRead, ops []*kvpb.TxnOp) *kvpb.TxnRequest {
	req := &kvpb.TxnRequest{Id: NewTxnID(), Success: ops}
	for _, k := range keys {
		r := reads[k]
		if r.Exists {
			req.Compares = append(req.Compares, &kvpb.Compare{Key: []byte(k), Target: kvpb.Compare_TARGET_REVISION,
				Result: kvpb.Compare_RESULT_EQUAL, RangeId: r.RangeID, Index: r.Revision})
		} else {
			req.Compares = append(req.Compares, &kvpb.Compare{Key: []byte(k), Target: kvpb.Compare_TARGET_EXISTS,
				Result: kvpb.Compare_RESULT_EQUAL, Exists: false})
		}
	}
	if 2*len(keys)+len(ops) <= maxTxnOps {
		for _, k := range keys {
			req.Failure = append(req.Failure, &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}})
		}
	}
	return req
}

// maxTxnOps is the server's bound on compares plus operations
// (replication.MaxTxnOps, which this package does not import).
const maxTxnOps = 128

// rereads takes the next attempt's reads from a failed attempt's failure
// gets, or returns nil (read again) when they are not all there.
func rereads(keys []string, resp *kvpb.TxnResponse) map[string]TxnRead {
	res := resp.GetResults()
	if len(res) != len(keys) {
		return nil
	}
	reads := make(map[string]TxnRead, len(keys))
	for i, k := range keys {
		g := res[i].GetGet()
		if g == nil {
			return nil
		}
		r := TxnRead{Key: []byte(k)}
		if kv := g.GetKv(); kv != nil {
			r.Value, r.Exists, r.RangeID, r.Revision = kv.GetValue(), true, g.GetHeader().GetRangeId(), kv.GetRevision()
			if r.RangeID == 0 {
				return nil
			}
		}
		reads[k] = r
	}
	return reads
}
