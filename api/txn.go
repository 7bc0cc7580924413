package api

import (
	"context"
	"regexp"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/auth"
	"github.com/dialkv/dialkv/replication"
)

// txnIDPattern is what a client-chosen transaction id may look like: it
// names the transaction's record in the meta range.
var txnIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func checkTxnID(id string, required bool) error {
	if id == "" && !required {
		return nil
	}
	if !txnIDPattern.MatchString(id) {
		return invalid("transaction id %q: want 1 to 128 of A-Z a-z 0-9 . _ : -", id)
	}
	return nil
}

// checkTxn validates a transaction: its size, every key and value, scans'
// bounds, and that no key is written twice in one branch.
func (s *Service) checkTxn(r *kvpb.TxnRequest) error {
	if err := checkTxnID(r.Id, false); err != nil {
		return err
	}
	if n := len(r.Compares) + len(r.Success) + len(r.Failure); n > replication.MaxTxnOps {
		return invalid("transaction has %d compares and operations, more than %d", n, replication.MaxTxnOps)
	}
	if len(r.Compares)+len(r.Success)+len(r.Failure) == 0 {
		return invalid("transaction has no compares and no operations")
	}
	for i, c := range r.Compares {
		if err := s.checkKey(c.Key); err != nil {
			return invalid("compare %d: %v", i, err)
		}
		if err := s.checkValue(c.Value); err != nil {
			return err
		}
		if c.Target == kvpb.Compare_TARGET_EXISTS && c.Result != kvpb.Compare_RESULT_EQUAL && c.Result != kvpb.Compare_RESULT_NOT_EQUAL {
			return invalid("compare %d: existence compares only as EQUAL or NOT_EQUAL", i)
		}
		if c.Target == kvpb.Compare_TARGET_REVISION && c.RangeId == 0 {
			return invalid("compare %d: a revision compare names its range (range_id) with the index", i)
		}
		if c.Version < 0 {
			return invalid("compare %d: negative version", i)
		}
	}
	for b, ops := range [][]*kvpb.TxnOp{r.Success, r.Failure} {
		branch := [...]string{"success", "failure"}[b]
		written := map[string]bool{}
		for i, o := range ops {
			var key []byte
			switch {
			case o.GetPut() != nil:
				key = o.GetPut().Key
				if err := s.checkValue(o.GetPut().Value); err != nil {
					return err
				}
				if o.GetPut().Lease < 0 {
					return invalid("%s op %d: negative lease", branch, i)
				}
			case o.GetDelete() != nil:
				key = o.GetDelete().Key
			case o.GetGet() != nil:
				if err := s.checkKey(o.GetGet().Key); err != nil {
					return invalid("%s op %d: %v", branch, i, err)
				}
				continue
			case o.GetScan() != nil:
				sc := o.GetScan()
				if len(sc.Prefix) > 0 && (len(sc.Start) > 0 || len(sc.End) > 0) {
					return invalid("%s op %d: give either prefix or start/end, not both", branch, i)
				}
				if len(sc.Prefix) == 0 && len(sc.Start) == 0 {
					return invalid("%s op %d: a scan needs a prefix or a start", branch, i)
				}
				if sc.Limit > s.limits.MaxScanLimit {
					return invalid("%s op %d: scan limit %d is more than %d", branch, i, sc.Limit, s.limits.MaxScanLimit)
				}
				continue
			default:
				return invalid("%s op %d: empty operation", branch, i)
			}
			if err := s.checkKey(key); err != nil {
				return invalid("%s op %d: %v", branch, i, err)
			}
			if written[string(key)] {
				return invalid("%s: key %q is written twice in one transaction", branch, key)
			}
			written[string(key)] = true
		}
	}
	return nil
}

// authorizeTxn checks the caller may read every key the transaction
// compares or reads and write every key it writes, in either branch.
func (s *Service) authorizeTxn(ctx context.Context, r *kvpb.TxnRequest) error {
	for _, c := range r.Compares {
		if err := s.authorizeKey(ctx, auth.OpRead, c.Key); err != nil {
			return err
		}
	}
	for _, ops := range [][]*kvpb.TxnOp{r.Success, r.Failure} {
		for _, o := range ops {
			var err error
			switch {
			case o.GetPut() != nil:
				err = s.authorizeKey(ctx, auth.OpWrite, o.GetPut().Key)
			case o.GetDelete() != nil:
				err = s.authorizeKey(ctx, auth.OpWrite, o.GetDelete().Key)
			case o.GetGet() != nil:
				err = s.authorizeKey(ctx, auth.OpRead, o.GetGet().Key)
			case o.GetScan() != nil:
				start, end := scanBounds(o.GetScan().Prefix, o.GetScan().Start, o.GetScan().End)
				err = s.authorizeRange(ctx, auth.OpRead, start, end)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Txn is KV.Txn.
func (s *Service) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	return run(s, ctx, "Txn", opWrite, req, s.checkTxn, guarded(s.authorizeTxn, s.b.Txn))
}

// TxnStatus is KV.TxnStatus.
func (s *Service) TxnStatus(ctx context.Context, req *kvpb.TxnStatusRequest) (*kvpb.TxnStatusResponse, error) {
	kind := opRead
	if req.AbortIfPending {
		kind = opWrite
	}
	return run(s, ctx, "TxnStatus", kind, req, func(r *kvpb.TxnStatusRequest) error {
		if err := checkTxnID(r.Id, true); err != nil {
			return err
		}
		if len(r.Key) > 0 {
			return s.checkKey(r.Key)
		}
		return nil
	}, guarded(func(ctx context.Context, r *kvpb.TxnStatusRequest) error {
		if len(r.Key) > 0 {
			return s.authorizeKey(ctx, auth.OpRead, r.Key)
		}
		return s.authorize(ctx, func(*auth.State, string) error { return nil })
	}, s.b.TxnStatus))
}

// MetaSwap is Internal.MetaSwap (peer port only).
func (s *Service) MetaSwap(ctx context.Context, req *kvpb.MetaSwapRequest) (*kvpb.MetaSwapResponse, error) {
	return run(s, ctx, "MetaSwap", opWrite, req, func(r *kvpb.MetaSwapRequest) error { return s.checkKey(r.Key) }, s.b.MetaSwap)
}

// RangePropose is Internal.RangePropose (peer port only).
func (s *Service) RangePropose(ctx context.Context, req *kvpb.RangeProposeRequest) (*kvpb.RangeProposeResponse, error) {
	return run(s, ctx, "RangePropose", opWrite, req, func(r *kvpb.RangeProposeRequest) error {
		if r.RangeId == 0 || len(r.Command) == 0 {
			return invalid("range_id and command are required")
		}
		return nil
	}, s.b.RangePropose)
}

// TxnLocks is Internal.TxnLocks (peer port only).
func (s *Service) TxnLocks(ctx context.Context, req *kvpb.TxnLocksRequest) (*kvpb.TxnLocksResponse, error) {
	return run(s, ctx, "TxnLocks", opRead, req, func(r *kvpb.TxnLocksRequest) error {
		if len(r.Ids) > 10000 {
			return invalid("at most 10000 transaction ids, got %d", len(r.Ids))
		}
		return nil
	}, s.b.TxnLocks)
}
