package clienttest

import (
	"bytes"
	"context"
	"sort"
	"strconv"

	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// Transactions in the fake run as a real single-range one does, whatever
// the ranges: compares and one branch, atomically under the Store's lock,
// with their outcome kept by id for TxnStatus and for a retry of the same
// id (which applies nothing and answers without results).
const (
	MethodTxn       = "Txn"
	MethodTxnStatus = "TxnStatus"
	// MethodTxnApplied is scripted with Fail like a method, but its
	// failures come after a Txn has applied: the answer is lost, not the
	// transaction (an INDETERMINATE outcome that in fact committed).
	MethodTxnApplied = "TxnApplied"
)

// txnOutcome is what became of a transaction id.
type txnOutcome struct {
	state     kvpb.TxnState
	succeeded bool
}

func txnConflict(msg string) error {
	return rpctypes.Error(codes.Aborted, rpctypes.ReasonTxnConflict, msg, nil)
}

// TxnState returns what the fake recorded of transaction id
// (TXN_STATE_UNSPECIFIED: nothing).
func (st *Store) TxnState(id string) kvpb.TxnState {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.txns[id].state
}

func (s *Server) Txn(_ context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if err := s.enter(MethodTxn); err != nil {
		return nil, err
	}
	resp, err := s.txnApply(req)
	if err != nil {
		return nil, err
	}
	if err := s.enter(MethodTxnApplied); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *Server) txnApply(req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.txns == nil {
		st.txns = map[string]txnOutcome{}
	}
	id := req.GetId()
	if id == "" {
		id = "fake-" + s.ID + "-" + strconv.FormatUint(st.rev+1, 10)
	}
	switch o := st.txns[id]; o.state {
	case kvpb.TxnState_TXN_STATE_COMMITTED:
		return &kvpb.TxnResponse{Succeeded: o.succeeded, Id: id}, nil
	case kvpb.TxnState_TXN_STATE_ABORTED:
		return nil, txnConflict("transaction " + id + " was aborted")
	}
	ok := true
	for _, c := range req.GetCompares() {
		held, err := st.compareLocked(c)
		if err != nil {
			return nil, err
		}
		ok = ok && held
	}
	ops := req.GetSuccess()
	if !ok {
		ops = req.GetFailure()
	}
	resp := &kvpb.TxnResponse{Succeeded: ok, Id: id}
	written := map[uint64]uint64{}
	for _, o := range ops {
		var r *kvpb.TxnOpResult
		switch {
		case o.GetPut() != nil:
			p := o.GetPut()
			rev := st.putLocked(p.GetKey(), p.GetValue())
			h := s.writeHeaderLocked(p.GetKey(), rev)
			written[h.RangeId] = rev
			r = &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Put{Put: &kvpb.PutResponse{Header: h}}}
		case o.GetDelete() != nil:
			k := o.GetDelete().GetKey()
			_, found := st.kvs[string(k)]
			st.rev++
			if found {
				st.deleteLocked(k, kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED, 0)
			}
			h := s.writeHeaderLocked(k, st.rev)
			written[h.RangeId] = st.rev
			r = &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Delete{Delete: &kvpb.DeleteResponse{Header: h, Deleted: found}}}
		case o.GetGet() != nil:
			k := o.GetGet().GetKey()
			g := &kvpb.GetResponse{Header: s.readHeaderLocked(k, nil)}
			if kv, found := st.kvs[string(k)]; found {
				g.Kv = kv
			}
			r = &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Get{Get: g}}
		case o.GetScan() != nil:
			r = &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Scan{Scan: s.txnScanLocked(o.GetScan())}}
		default:
			return nil, invalid("empty transaction operation")
		}
		resp.Results = append(resp.Results, r)
	}
	for rangeID, rev := range written {
		resp.Headers = append(resp.Headers, &kvpb.WriteHeader{ServedBy: s.ID, RangeId: rangeID, Revision: rev, SessionToken: "s" + strconv.FormatUint(rev, 10)})
	}
	sort.Slice(resp.Headers, func(i, j int) bool { return resp.Headers[i].RangeId < resp.Headers[j].RangeId })
	resp.SessionToken = "s" + strconv.FormatUint(st.rev, 10)
	st.txns[id] = txnOutcome{state: kvpb.TxnState_TXN_STATE_COMMITTED, succeeded: ok}
	return resp, nil
}

// compareLocked evaluates c as the state machine does. Versions are not
// kept by the fake: a version compare is refused.
func (st *Store) compareLocked(c *kvpb.Compare) (bool, error) {
	kv, found := st.kvs[string(c.GetKey())]
	var cmp int
	switch c.GetTarget() {
	case kvpb.Compare_TARGET_VALUE:
		if !found {
			return false, nil
		}
		cmp = bytes.Compare(kv.GetValue(), c.GetValue())
	case kvpb.Compare_TARGET_EXISTS:
		return (found == c.GetExists()) == (c.GetResult() == kvpb.Compare_RESULT_EQUAL), nil
	case kvpb.Compare_TARGET_REVISION:
		if c.GetRangeId() != st.rangeIDLocked(c.GetKey()) {
			return c.GetResult() == kvpb.Compare_RESULT_NOT_EQUAL, nil
		}
		cmp = compareU64(kv.GetRevision(), c.GetIndex())
	default:
		return false, invalid("the fake does not keep versions")
	}
	switch c.GetResult() {
	case kvpb.Compare_RESULT_EQUAL:
		return cmp == 0, nil
	case kvpb.Compare_RESULT_NOT_EQUAL:
		return cmp != 0, nil
	case kvpb.Compare_RESULT_GREATER:
		return cmp > 0, nil
	default:
		return cmp < 0, nil
	}
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *Server) txnScanLocked(req *kvpb.ScanRequest) *kvpb.ScanResponse {
	st := s.Store
	start, end := req.GetStart(), req.GetEnd()
	if p := req.GetPrefix(); len(p) > 0 {
		start = p
	}
	var keys []string
	for k := range st.kvs {
		kb := []byte(k)
		if bytes.Compare(kb, start) < 0 || (len(end) > 0 && bytes.Compare(kb, end) >= 0) ||
			(len(req.GetPrefix()) > 0 && !bytes.HasPrefix(kb, req.GetPrefix())) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	resp := &kvpb.ScanResponse{Header: s.readHeaderLocked(start, nil)}
	limit := int(req.GetLimit())
	for i, k := range keys {
		if limit > 0 && i == limit {
			resp.More, resp.NextKey = true, []byte(k)
			break
		}
		resp.Kvs = append(resp.Kvs, st.kvs[k])
	}
	return resp
}

func (s *Server) TxnStatus(_ context.Context, req *kvpb.TxnStatusRequest) (*kvpb.TxnStatusResponse, error) {
	if err := s.enter(MethodTxnStatus); err != nil {
		return nil, err
	}
	st := s.Store
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.txns == nil {
		st.txns = map[string]txnOutcome{}
	}
	o := st.txns[req.GetId()]
	if o.state == kvpb.TxnState_TXN_STATE_UNSPECIFIED {
		o.state = kvpb.TxnState_TXN_STATE_PENDING
		if req.GetAbortIfPending() {
			o.state = kvpb.TxnState_TXN_STATE_ABORTED
			st.txns[req.GetId()] = o
		}
	}
	return &kvpb.TxnStatusResponse{Id: req.GetId(), State: o.state, Succeeded: o.succeeded}, nil
}
