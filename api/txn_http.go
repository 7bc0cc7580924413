package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// txnBody is the JSON body of POST /v1/txn. Keys and values are Bytes: a
// string, or {"base64": "..."} for bytes that are not UTF-8, as everywhere
// in the HTTP API. Pointers tell a field that is absent from one that is
// zero, so that a compare or an operation missing what it needs is refused
// by name instead of running on a zero value.
type txnBody struct {
	ID      string       `json:"id"`
	Compare []txnCompare `json:"compare"`
	Success []txnOpJSON  `json:"success"`
	Failure []txnOpJSON  `json:"failure"`
}

type txnCompare struct {
	Key     *Bytes  `json:"key"`
	Target  string  `json:"target"`
	Result  string  `json:"result"`
	Value   *Bytes  `json:"value"`
	Exists  *bool   `json:"exists"`
	Version *int64  `json:"version"`
	RangeID *uint64 `json:"range_id"`
	Index   *uint64 `json:"index"`
}

type txnOpJSON struct {
	Put    *txnPutJSON  `json:"put"`
	Delete *txnKeyJSON  `json:"delete"`
	Get    *txnKeyJSON  `json:"get"`
	Scan   *txnScanJSON `json:"scan"`
}

type txnPutJSON struct {
	Key   *Bytes `json:"key"`
	Value *Bytes `json:"value"`
	Lease int64  `json:"lease"`
}

type txnKeyJSON struct {
	Key *Bytes `json:"key"`
}

type txnScanJSON struct {
	Prefix Bytes  `json:"prefix"`
	Start  Bytes  `json:"start"`
	End    Bytes  `json:"end"`
	Limit  uint32 `json:"limit"`
}

const txnBodyWant = `{"id": "...", "compare": [{"key": "k", "target": "value|exists|version|revision", "result": "=|!=|>|<", ...}], ` +
	`"success": [{"put": {"key": "k", "value": "v"}} | {"delete": {"key": "k"}} | {"get": {"key": "k"}} | {"scan": {"prefix": "p"}}], "failure": [...]}`

var compareTargets = map[string]kvpb.Compare_Target{
	"value":    kvpb.Compare_TARGET_VALUE,
	"exists":   kvpb.Compare_TARGET_EXISTS,
	"version":  kvpb.Compare_TARGET_VERSION,
	"revision": kvpb.Compare_TARGET_REVISION,
}

var compareResults = map[string]kvpb.Compare_Result{
	"=": kvpb.Compare_RESULT_EQUAL, "==": kvpb.Compare_RESULT_EQUAL, "equal": kvpb.Compare_RESULT_EQUAL,
	"!=": kvpb.Compare_RESULT_NOT_EQUAL, "not_equal": kvpb.Compare_RESULT_NOT_EQUAL,
	">": kvpb.Compare_RESULT_GREATER, "greater": kvpb.Compare_RESULT_GREATER,
	"<": kvpb.Compare_RESULT_LESS, "less": kvpb.Compare_RESULT_LESS,
}

// toProto turns the body into the request the Service validates further
// (limits, keys written twice, scan bounds). What only the JSON form can
// get wrong is refused here: an unknown target or result, a compare
// without the field its target reads or with another target's field, an
// operation that is not exactly one of put, delete, get and scan.
func (b *txnBody) toProto() (*kvpb.TxnRequest, error) {
	req := &kvpb.TxnRequest{Id: b.ID}
	for i, c := range b.Compare {
		pc, err := c.toProto()
		if err != nil {
			return nil, invalid("compare %d: %v", i, err)
		}
		req.Compares = append(req.Compares, pc)
	}
	for _, br := range []struct {
		name string
		ops  []txnOpJSON
		to   *[]*kvpb.TxnOp
	}{{"success", b.Success, &req.Success}, {"failure", b.Failure, &req.Failure}} {
		for i, o := range br.ops {
			po, err := o.toProto()
			if err != nil {
				return nil, invalid("%s op %d: %v", br.name, i, err)
			}
			*br.to = append(*br.to, po)
		}
	}
	return req, nil
}

func (c *txnCompare) toProto() (*kvpb.Compare, error) {
	if c.Key == nil {
		return nil, fmt.Errorf(`"key" is required`)
	}
	target, ok := compareTargets[strings.ToLower(c.Target)]
	if !ok {
		return nil, fmt.Errorf(`"target" %q: want value, exists, version or revision`, c.Target)
	}
	result, ok := compareResults[strings.ToLower(c.Result)]
	if !ok {
		return nil, fmt.Errorf(`"result" %q: want =, !=, > or <`, c.Result)
	}
	pc := &kvpb.Compare{Key: *c.Key, Target: target, Result: result}
	// The field the target reads must be there, and no other target's:
	// {"target": "value", "version": 3} is a mistake, not a value compare
	// against the empty value.
	given := map[string]bool{"value": c.Value != nil, "exists": c.Exists != nil, "version": c.Version != nil,
		"range_id": c.RangeID != nil, "index": c.Index != nil}
	var need []string
	switch target {
	case kvpb.Compare_TARGET_VALUE:
		need = []string{"value"}
	case kvpb.Compare_TARGET_EXISTS:
		need = []string{"exists"}
	case kvpb.Compare_TARGET_VERSION:
		need = []string{"version"}
	case kvpb.Compare_TARGET_REVISION:
		need = []string{"range_id", "index"}
	}
	for _, f := range need {
		if !given[f] {
			return nil, fmt.Errorf("target %s needs %q", strings.ToLower(c.Target), f)
		}
		delete(given, f)
	}
	for _, f := range []string{"value", "exists", "version", "range_id", "index"} {
		if given[f] {
			return nil, fmt.Errorf("target %s does not take %q", strings.ToLower(c.Target), f)
		}
	}
	switch target {
	case kvpb.Compare_TARGET_VALUE:
		pc.Value = *c.Value
	case kvpb.Compare_TARGET_EXISTS:
		pc.Exists = *c.Exists
	case kvpb.Compare_TARGET_VERSION:
		pc.Version = *c.Version
	case kvpb.Compare_TARGET_REVISION:
		pc.RangeId, pc.Index = *c.RangeID, *c.Index
	}
	return pc, nil
}

func (o *txnOpJSON) toProto() (*kvpb.TxnOp, error) {
	n := 0
	for _, set := range []bool{o.Put != nil, o.Delete != nil, o.Get != nil, o.Scan != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf(`want exactly one of "put", "delete", "get" and "scan", got %d`, n)
	}
	switch {
	case o.Put != nil:
		if o.Put.Key == nil || o.Put.Value == nil {
			return nil, fmt.Errorf(`put needs "key" and "value"`)
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: *o.Put.Key, Value: *o.Put.Value, Lease: o.Put.Lease}}}, nil
	case o.Delete != nil:
		if o.Delete.Key == nil {
			return nil, fmt.Errorf(`delete needs "key"`)
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteRequest{Key: *o.Delete.Key}}}, nil
	case o.Get != nil:
		if o.Get.Key == nil {
			return nil, fmt.Errorf(`get needs "key"`)
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: *o.Get.Key}}}, nil
	default:
		sc := o.Scan
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Scan{Scan: &kvpb.ScanRequest{Prefix: sc.Prefix, Start: sc.Start, End: sc.End, Limit: sc.Limit}}}, nil
	}
}

func (h *httpAPI) txn(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	var body txnBody
	// What gRPC takes in one message, each byte up to 6x larger once
	// JSON-escaped.
	limit := int64(6 * h.svc.grpcMaxRecv())
	if err := decodeJSONBody(w, r, limit, &body, txnBodyWant); err != nil {
		writeError(w, err)
		return
	}
	req, err := body.toProto()
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.Txn(ctx, req)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set(HeaderSession, resp.GetSessionToken())
	writeJSON(w, rpctypes.NewTxnResultJSON(req, resp))
}

// txnStatusResult is the JSON answer of GET /v1/txn/status.
type txnStatusResult struct {
	ID        string `json:"id"`
	State     string `json:"state"` // COMMITTED, ABORTED or PENDING
	Succeeded bool   `json:"succeeded"`
}

// txnStateName is a transaction state as the HTTP API spells it:
// COMMITTED, ABORTED, PENDING (UNSPECIFIED for the zero value).
func txnStateName(s kvpb.TxnState) string {
	return strings.TrimPrefix(s.String(), "TXN_STATE_")
}

func (h *httpAPI) txnStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer cancel()
	q := r.URL.Query()
	id := q.Get("id")
	if id == "" {
		writeError(w, invalid("query parameter id is required: the transaction's id"))
		return
	}
	abort, err := boolParam(r, "abort_if_pending")
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := h.svc.TxnStatus(ctx, &kvpb.TxnStatusRequest{Id: id, Key: queryBytes(q, "key"), AbortIfPending: abort})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, txnStatusResult{ID: resp.GetId(), State: txnStateName(resp.GetState()), Succeeded: resp.GetSucceeded()})
}
