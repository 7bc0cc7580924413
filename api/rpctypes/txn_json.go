package rpctypes

import "github.com/dialkv/dialkv/api/kvpb"

// TxnResultJSON is the JSON answer of POST /v1/txn. kvctl txn -w json
// prints it too, so that the CLI and the HTTP API cannot drift apart.
type TxnResultJSON struct {
	Succeeded bool              `json:"succeeded"`
	ID        string            `json:"id"`
	Results   []TxnOpResultJSON `json:"results"`
	// One per range written: the index of the transaction's writes there.
	Headers      []TxnHeaderJSON `json:"headers"`
	SessionToken string          `json:"session_token"`
}

// TxnHeaderJSON is where one range applied the transaction's writes.
type TxnHeaderJSON struct {
	RangeID      uint64 `json:"range_id"`
	Revision     uint64 `json:"revision"`
	ServedBy     string `json:"served_by"`
	SessionToken string `json:"session_token"`
}

// TxnOpResultJSON is the result of one operation: exactly one field is
// set, named like the operation in the request.
type TxnOpResultJSON struct {
	Put    *TxnWriteResultJSON `json:"put,omitempty"`
	Delete *TxnWriteResultJSON `json:"delete,omitempty"`
	Get    *TxnGetResultJSON   `json:"get,omitempty"`
	Scan   *TxnScanResultJSON  `json:"scan,omitempty"`
}

// TxnWriteResultJSON is a put's or a delete's result; Deleted is set for
// a delete only.
type TxnWriteResultJSON struct {
	RangeID  uint64 `json:"range_id"`
	Revision uint64 `json:"revision"`
	Deleted  *bool  `json:"deleted,omitempty"`
}

// TxnGetResultJSON is a get's result. Value is nil when the key was not
// found, so that a missing key and an empty value differ.
type TxnGetResultJSON struct {
	Found    bool   `json:"found"`
	Key      Bytes  `json:"key"`
	Value    *Bytes `json:"value,omitempty"`
	Revision uint64 `json:"revision,omitempty"`
	RangeID  uint64 `json:"range_id"`
}

// TxnScanResultJSON is a scan's result, in the shape of GET /v1/scan's.
type TxnScanResultJSON struct {
	KVs     []KVJSON `json:"kvs"`
	More    bool     `json:"more"`
	NextKey Bytes    `json:"next_key,omitempty"`
	RangeID uint64   `json:"range_id"`
}

// NewTxnResultJSON renders resp for req. Results follow the branch that
// ran; a get of a missing key names the key from the request, since the
// answer has none. A retry of an id that had already applied carries no
// per-operation results (the server does not keep them): results is [].
func NewTxnResultJSON(req *kvpb.TxnRequest, resp *kvpb.TxnResponse) TxnResultJSON {
	out := TxnResultJSON{Succeeded: resp.GetSucceeded(), ID: resp.GetId(), Results: []TxnOpResultJSON{}, Headers: []TxnHeaderJSON{},
		SessionToken: resp.GetSessionToken()}
	for _, h := range resp.GetHeaders() {
		out.Headers = append(out.Headers, TxnHeaderJSON{RangeID: h.GetRangeId(), Revision: h.GetRevision(), ServedBy: h.GetServedBy(), SessionToken: h.GetSessionToken()})
	}
	branch := req.GetSuccess()
	if !resp.GetSucceeded() {
		branch = req.GetFailure()
	}
	for i, r := range resp.GetResults() {
		var op *kvpb.TxnOp
		if i < len(branch) {
			op = branch[i]
		}
		var res TxnOpResultJSON
		switch {
		case r.GetPut() != nil:
			h := r.GetPut().GetHeader()
			res.Put = &TxnWriteResultJSON{RangeID: h.GetRangeId(), Revision: h.GetRevision()}
		case r.GetDelete() != nil:
			h := r.GetDelete().GetHeader()
			deleted := r.GetDelete().GetDeleted()
			res.Delete = &TxnWriteResultJSON{RangeID: h.GetRangeId(), Revision: h.GetRevision(), Deleted: &deleted}
		case r.GetGet() != nil:
			g := r.GetGet()
			res.Get = &TxnGetResultJSON{Key: op.GetGet().GetKey(), RangeID: g.GetHeader().GetRangeId()}
			if kv := g.GetKv(); kv != nil {
				v := Bytes(kv.GetValue())
				res.Get.Found, res.Get.Key, res.Get.Value, res.Get.Revision = true, kv.GetKey(), &v, kv.GetRevision()
			}
		case r.GetScan() != nil:
			sc := r.GetScan()
			res.Scan = &TxnScanResultJSON{KVs: make([]KVJSON, len(sc.GetKvs())), More: sc.GetMore(), NextKey: sc.GetNextKey(), RangeID: sc.GetHeader().GetRangeId()}
			for j, kv := range sc.GetKvs() {
				res.Scan.KVs[j] = KVJSON{Key: kv.GetKey(), Value: kv.GetValue(), Revision: kv.GetRevision()}
			}
		}
		out.Results = append(out.Results, res)
	}
	return out
}
