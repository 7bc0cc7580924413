package rpctypes

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
)

// TestTxnResultJSON pins the one shape POST /v1/txn answers with and kvctl
// txn -w json prints: the HTTP encoder escapes <, > and &, kvctl's (no
// HTML escaping) prints them as they are; a get of a missing key names the
// key from the branch that ran; an answer without results has [] for them.
func TestTxnResultJSON(t *testing.T) {
	get := func(k string) *kvpb.TxnOp {
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}}
	}
	rh := &kvpb.ReadHeader{RangeId: 4}
	req := &kvpb.TxnRequest{Success: []*kvpb.TxnOp{get("<s>"), get("s2")}, Failure: []*kvpb.TxnOp{get("f&")}}
	found := &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Get{Get: &kvpb.GetResponse{Header: rh,
		Kv: &kvpb.KeyValue{Key: []byte("s2"), Value: []byte("v\xff"), Revision: 7}}}}
	missing := &kvpb.TxnOpResult{Result: &kvpb.TxnOpResult_Get{Get: &kvpb.GetResponse{Header: rh}}}
	tests := []struct {
		name       string
		resp       *kvpb.TxnResponse
		http, html string // as the HTTP API writes it, and without HTML escaping
	}{
		{"success branch",
			&kvpb.TxnResponse{Succeeded: true, Id: "t<1>", Results: []*kvpb.TxnOpResult{missing, found},
				Headers: []*kvpb.WriteHeader{{RangeId: 4, Revision: 7, ServedBy: "n1", SessionToken: "4:7"}}, SessionToken: "4:7"},
			`{"succeeded":true,"id":"t\u003c1\u003e","results":[{"get":{"found":false,"key":"\u003cs\u003e","range_id":4}},{"get":{"found":true,"key":"s2","value":{"base64":"dv8="},"revision":7,"range_id":4}}],"headers":[{"range_id":4,"revision":7,"served_by":"n1","session_token":"4:7"}],"session_token":"4:7"}`,
			`{"succeeded":true,"id":"t<1>","results":[{"get":{"found":false,"key":"<s>","range_id":4}},{"get":{"found":true,"key":"s2","value":{"base64":"dv8="},"revision":7,"range_id":4}}],"headers":[{"range_id":4,"revision":7,"served_by":"n1","session_token":"4:7"}],"session_token":"4:7"}`},
		{"failure branch",
			&kvpb.TxnResponse{Id: "t", Results: []*kvpb.TxnOpResult{missing}},
			`{"succeeded":false,"id":"t","results":[{"get":{"found":false,"key":"f\u0026","range_id":4}}],"headers":[],"session_token":""}`,
			`{"succeeded":false,"id":"t","results":[{"get":{"found":false,"key":"f&","range_id":4}}],"headers":[],"session_token":""}`},
		{"retry of an applied id",
			&kvpb.TxnResponse{Succeeded: true, Id: "t"},
			`{"succeeded":true,"id":"t","results":[],"headers":[],"session_token":""}`,
			`{"succeeded":true,"id":"t","results":[],"headers":[],"session_token":""}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewTxnResultJSON(req, tc.resp)
			for _, escape := range []bool{true, false} {
				var b bytes.Buffer
				enc := json.NewEncoder(&b)
				enc.SetEscapeHTML(escape)
				if err := enc.Encode(v); err != nil {
					t.Fatal(err)
				}
				want := tc.html
				if escape {
					want = tc.http
				}
				if got := bytes.TrimSuffix(b.Bytes(), []byte("\n")); string(got) != want {
					t.Errorf("escapeHTML=%v:\n got %s\nwant %s", escape, got, want)
				}
			}
		})
	}
}
