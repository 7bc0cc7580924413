package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

func opPut(k, v string, lease int64) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}}}
}

func opDel(k string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteRequest{Key: []byte(k)}}}
}

func opGet(k string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}}
}

// TestHTTPTxnRequestMapping: every JSON form of a compare and an
// operation reaches the backend as the TxnRequest it means.
func TestHTTPTxnRequestMapping(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *kvpb.TxnRequest
	}{
		{"the brief's example",
			`{"id":"t1","compare":[{"key":"a","target":"value","result":"=","value":"1"},
			  {"key":"b","target":"version","result":">","version":2},
			  {"key":"c","target":"exists","result":"=","exists":false},
			  {"key":"d","target":"revision","result":"=","range_id":7,"index":120}],
			 "success":[{"put":{"key":"a","value":"2","lease":0}},{"delete":{"key":"x"}},{"get":{"key":"b"}},
			  {"scan":{"prefix":"p/","limit":10}}],
			 "failure":[{"get":{"key":"a"}}]}`,
			&kvpb.TxnRequest{Id: "t1",
				Compares: []*kvpb.Compare{
					{Key: []byte("a"), Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_EQUAL, Value: []byte("1")},
					{Key: []byte("b"), Target: kvpb.Compare_TARGET_VERSION, Result: kvpb.Compare_RESULT_GREATER, Version: 2},
					{Key: []byte("c"), Target: kvpb.Compare_TARGET_EXISTS, Result: kvpb.Compare_RESULT_EQUAL, Exists: false},
					{Key: []byte("d"), Target: kvpb.Compare_TARGET_REVISION, Result: kvpb.Compare_RESULT_EQUAL, RangeId: 7, Index: 120},
				},
				Success: []*kvpb.TxnOp{opPut("a", "2", 0), opDel("x"), opGet("b"),
					{Op: &kvpb.TxnOp_Scan{Scan: &kvpb.ScanRequest{Prefix: []byte("p/"), Limit: 10}}}},
				Failure: []*kvpb.TxnOp{opGet("a")},
			}},
		{"words for results, any case; empty value; a lease",
			`{"compare":[{"key":"a","target":"VALUE","result":"not_equal","value":""},{"key":"b","target":"version","result":"Less","version":0}],
			  "success":[{"put":{"key":"a","value":"","lease":7587}}]}`,
			&kvpb.TxnRequest{
				Compares: []*kvpb.Compare{
					{Key: []byte("a"), Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_NOT_EQUAL, Value: []byte{}},
					{Key: []byte("b"), Target: kvpb.Compare_TARGET_VERSION, Result: kvpb.Compare_RESULT_LESS},
				},
				Success: []*kvpb.TxnOp{opPut("a", "", 7587)},
			}},
		{"binary keys and values in base64",
			`{"compare":[{"key":{"base64":"/wA="},"target":"value","result":"!=","value":{"base64":"AQI="}}],
			  "success":[{"put":{"key":{"base64":"/wA="},"value":{"base64":"AQI="}}}],
			  "failure":[{"scan":{"start":{"base64":"/w=="},"end":{"base64":"/wE="}}}]}`,
			&kvpb.TxnRequest{
				Compares: []*kvpb.Compare{{Key: []byte{0xff, 0}, Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_NOT_EQUAL, Value: []byte{1, 2}}},
				Success:  []*kvpb.TxnOp{opPut("\xff\x00", "\x01\x02", 0)},
				Failure:  []*kvpb.TxnOp{{Op: &kvpb.TxnOp_Scan{Scan: &kvpb.ScanRequest{Start: []byte{0xff}, End: []byte{0xff, 1}}}}},
			}},
		{"operations only", `{"success":[{"delete":{"key":"a"}}]}`, &kvpb.TxnRequest{Success: []*kvpb.TxnOp{opDel("a")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			r := env.do("POST", "/v1/txn", []byte(tc.body))
			if r.code != http.StatusOK {
				t.Fatalf("POST /v1/txn: %s", r)
			}
			got, ok := env.fb.lastCall(t).req.(*kvpb.TxnRequest)
			if !ok {
				t.Fatalf("backend got %T; want *kvpb.TxnRequest", env.fb.lastCall(t).req)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("backend got\n%v\nwant\n%v", prototext.Format(got), prototext.Format(tc.want))
			}
		})
	}
}

// TestHTTPTxnResponseMapping: the answer's results follow the branch that
// ran, with keys and values readable, a missing key's get named from the
// request, and the session token in the body and the header.
func TestHTTPTxnResponseMapping(t *testing.T) {
	hdr := func(rangeID, rev uint64) *kvpb.WriteHeader {
		return &kvpb.WriteHeader{ServedBy: "n1", RangeId: rangeID, Revision: rev, SessionToken: "x"}
	}
	tests := []struct {
		name string
		body string
		resp *kvpb.TxnResponse
		want string
	}{
		{"success branch: put, delete, found and missing gets, scan",
			`{"id":"t1","compare":[{"key":"a","target":"exists","result":"=","exists":true}],
			  "success":[{"put":{"key":"a","value":"2"}},{"delete":{"key":"x"}},{"get":{"key":"b"}},{"get":{"key":"nope"}},{"scan":{"prefix":"p/"}}],
			  "failure":[{"get":{"key":"a"}}]}`,
			&kvpb.TxnResponse{Succeeded: true, Id: "t1", SessionToken: "7:120,9:44",
				Headers: []*kvpb.WriteHeader{hdr(7, 120), hdr(9, 44)},
				Results: []*kvpb.TxnOpResult{
					{Result: &kvpb.TxnOpResult_Put{Put: &kvpb.PutResponse{Header: hdr(7, 120)}}},
					{Result: &kvpb.TxnOpResult_Delete{Delete: &kvpb.DeleteResponse{Header: hdr(9, 44), Deleted: true}}},
					{Result: &kvpb.TxnOpResult_Get{Get: &kvpb.GetResponse{Header: &kvpb.ReadHeader{RangeId: 7}, Kv: &kvpb.KeyValue{Key: []byte("b"), Value: []byte("vb"), Revision: 100}}}},
					{Result: &kvpb.TxnOpResult_Get{Get: &kvpb.GetResponse{Header: &kvpb.ReadHeader{RangeId: 9}}}},
					{Result: &kvpb.TxnOpResult_Scan{Scan: &kvpb.ScanResponse{Header: &kvpb.ReadHeader{RangeId: 7},
						Kvs: []*kvpb.KeyValue{{Key: []byte("p/1"), Value: []byte{0xff}, Revision: 3}}, More: true, NextKey: []byte("p/2")}}},
				}},
			`{"succeeded":true,"id":"t1","results":[` +
				`{"put":{"range_id":7,"revision":120}},` +
				`{"delete":{"range_id":9,"revision":44,"deleted":true}},` +
				`{"get":{"found":true,"key":"b","value":"vb","revision":100,"range_id":7}},` +
				`{"get":{"found":false,"key":"nope","range_id":9}},` +
				`{"scan":{"kvs":[{"key":"p/1","value":{"base64":"/w=="},"revision":3}],"more":true,"next_key":"p/2","range_id":7}}],` +
				`"headers":[{"range_id":7,"revision":120,"served_by":"n1","session_token":"x"},{"range_id":9,"revision":44,"served_by":"n1","session_token":"x"}],` +
				`"session_token":"7:120,9:44"}`},
		{"failure branch: its missing get is named from the failure ops",
			`{"compare":[{"key":"a","target":"exists","result":"=","exists":true}],"success":[{"get":{"key":"s"}}],"failure":[{"get":{"key":"f"}}]}`,
			&kvpb.TxnResponse{Succeeded: false, Id: "n1-ab",
				Results: []*kvpb.TxnOpResult{{Result: &kvpb.TxnOpResult_Get{Get: &kvpb.GetResponse{Header: &kvpb.ReadHeader{RangeId: 1}}}}}},
			`{"succeeded":false,"id":"n1-ab","results":[{"get":{"found":false,"key":"f","range_id":1}}],"headers":[],"session_token":""}`},
		{"a replayed id: no results, empty lists",
			`{"id":"t2","success":[{"put":{"key":"a","value":"1"}}]}`,
			&kvpb.TxnResponse{Succeeded: true, Id: "t2", SessionToken: "7:5", Headers: []*kvpb.WriteHeader{hdr(7, 5)}},
			`{"succeeded":true,"id":"t2","results":[],"headers":[{"range_id":7,"revision":5,"served_by":"n1","session_token":"x"}],"session_token":"7:5"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			env.fb.setHook(func(context.Context, string, any) (any, error) { return tc.resp, nil })
			r := env.do("POST", "/v1/txn", []byte(tc.body))
			if r.code != http.StatusOK {
				t.Fatalf("POST /v1/txn: %s", r)
			}
			if got := strings.TrimSpace(string(r.body)); got != tc.want {
				t.Errorf("body\n%s\nwant\n%s", got, tc.want)
			}
			if got := r.header.Get(HeaderSession); got != tc.resp.SessionToken {
				t.Errorf("%s: %q; want %q", HeaderSession, got, tc.resp.SessionToken)
			}
		})
	}
}

// TestHTTPTxnBadBodies: a malformed transaction is 400 with a message
// naming what is wrong, and the backend never sees it.
func TestHTTPTxnBadBodies(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"empty body", ``, "malformed JSON body"},
		{"not an object", `[1]`, "malformed JSON body"},
		{"unknown field", `{"compares":[]}`, `unknown field "compares"`},
		{"trailing data", `{"success":[{"delete":{"key":"a"}}]} {}`, "goes on after its value"},
		{"key neither string nor base64", `{"success":[{"delete":{"key":5}}]}`, `want a string or {"base64"`},
		{"bad base64", `{"success":[{"delete":{"key":{"base64":"!!"}}}]}`, "base64"},
		{"unknown target", `{"compare":[{"key":"a","target":"mod","result":"=","value":"1"}]}`, `compare 0: "target" "mod": want value, exists, version or revision`},
		{"unknown result", `{"compare":[{"key":"a","target":"value","result":">=","value":"1"}]}`, `compare 0: "result" ">=": want =, !=, > or <`},
		{"compare without key", `{"compare":[{"target":"value","result":"=","value":"1"}]}`, `compare 0: "key" is required`},
		{"value compare without value", `{"compare":[{"key":"a","target":"value","result":"="}]}`, `compare 0: target value needs "value"`},
		{"value compare with a version", `{"compare":[{"key":"a","target":"value","result":"=","value":"1","version":3}]}`, `compare 0: target value does not take "version"`},
		{"revision compare without index", `{"compare":[{"key":"a","target":"revision","result":"=","range_id":7}]}`, `compare 0: target revision needs "index"`},
		{"exists compare as greater", `{"compare":[{"key":"a","target":"exists","result":">","exists":true}]}`, "existence compares only as EQUAL or NOT_EQUAL"},
		{"revision compare in range 0", `{"compare":[{"key":"a","target":"revision","result":"=","range_id":0,"index":3}]}`, "names its range"},
		{"empty op", `{"success":[{}]}`, `success op 0: want exactly one of "put", "delete", "get" and "scan", got 0`},
		{"two kinds in one op", `{"failure":[{"put":{"key":"a","value":"1"},"delete":{"key":"a"}}]}`, `failure op 0: want exactly one of "put", "delete", "get" and "scan", got 2`},
		{"put without value", `{"success":[{"put":{"key":"a"}}]}`, `success op 0: put needs "key" and "value"`},
		{"delete without key", `{"success":[{"delete":{}}]}`, `success op 0: delete needs "key"`},
		{"get without key", `{"success":[{"get":{}}]}`, `success op 0: get needs "key"`},
		{"scan without bounds", `{"success":[{"scan":{"limit":3}}]}`, "a scan needs a prefix or a start"},
		{"key written twice", `{"success":[{"put":{"key":"a","value":"1"}},{"delete":{"key":"a"}}]}`, `key "a" is written twice`},
		{"nothing to do", `{}`, "no compares and no operations"},
		{"bad id", `{"id":"a b","success":[{"delete":{"key":"a"}}]}`, `transaction id "a b"`},
		{"negative version", `{"compare":[{"key":"a","target":"version","result":"=","version":-1}]}`, "negative version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			r := env.do("POST", "/v1/txn", []byte(tc.body))
			eb := wantHTTPError(t, r, http.StatusBadRequest, rpctypes.ReasonInvalid)
			if !strings.Contains(eb.Error, tc.want) {
				t.Errorf("error %q; want it to contain %q", eb.Error, tc.want)
			}
			if n := env.fb.numCalls(); n != 0 {
				t.Errorf("backend was called %d times for a bad body", n)
			}
		})
	}
}

// TestHTTPTxnTooManyOps: past replication.MaxTxnOps the refusal names the
// limit.
func TestHTTPTxnTooManyOps(t *testing.T) {
	env := newHTTPEnv(t, testLimits())
	var ops []string
	for range replication.MaxTxnOps + 1 {
		ops = append(ops, `{"get":{"key":"a"}}`)
	}
	r := env.do("POST", "/v1/txn", []byte(`{"success":[`+strings.Join(ops, ",")+`]}`))
	eb := wantHTTPError(t, r, http.StatusBadRequest, rpctypes.ReasonInvalid)
	if !strings.Contains(eb.Error, "more than 128") {
		t.Errorf("error %q; want it to name the limit", eb.Error)
	}
}

// TestHTTPTxnErrors: the transaction reasons reach HTTP clients with their
// documented statuses.
func TestHTTPTxnErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   int
		reason rpctypes.Reason
	}{
		{"conflict", replication.ErrTxnConflict, http.StatusConflict, rpctypes.ReasonTxnConflict},
		{"fenced", raftstore.ErrTxnFenced, http.StatusConflict, rpctypes.ReasonTxnConflict},
		{"scan across ranges", replication.ErrCrossRange, http.StatusBadRequest, rpctypes.ReasonCrossRange},
		{"indeterminate", shard.ErrIndeterminate, http.StatusServiceUnavailable, rpctypes.ReasonIndeterminate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			env.fb.setHook(errHook(tc.err))
			wantHTTPError(t, env.do("POST", "/v1/txn", []byte(`{"success":[{"put":{"key":"a","value":"1"}}]}`)), tc.code, tc.reason)
		})
	}
}

func TestHTTPTxnStatus(t *testing.T) {
	tests := []struct {
		name  string
		query string
		resp  *kvpb.TxnStatusResponse
		want  *kvpb.TxnStatusRequest
		body  string
	}{
		{"committed, asked with a key and abort", "?id=t1&key=a%2Fb&abort_if_pending=true",
			&kvpb.TxnStatusResponse{Id: "t1", State: kvpb.TxnState_TXN_STATE_COMMITTED, Succeeded: true},
			&kvpb.TxnStatusRequest{Id: "t1", Key: []byte("a/b"), AbortIfPending: true},
			`{"id":"t1","state":"COMMITTED","succeeded":true}`},
		{"pending, id only", "?id=t2",
			&kvpb.TxnStatusResponse{Id: "t2", State: kvpb.TxnState_TXN_STATE_PENDING},
			&kvpb.TxnStatusRequest{Id: "t2"},
			`{"id":"t2","state":"PENDING","succeeded":false}`},
		{"aborted", "?id=t3&abort_if_pending=1",
			&kvpb.TxnStatusResponse{Id: "t3", State: kvpb.TxnState_TXN_STATE_ABORTED},
			&kvpb.TxnStatusRequest{Id: "t3", AbortIfPending: true},
			`{"id":"t3","state":"ABORTED","succeeded":false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			env.fb.setHook(func(context.Context, string, any) (any, error) { return tc.resp, nil })
			r := env.do("GET", "/v1/txn/status"+tc.query, nil)
			if r.code != http.StatusOK {
				t.Fatalf("GET /v1/txn/status%s: %s", tc.query, r)
			}
			if got := strings.TrimSpace(string(r.body)); got != tc.body {
				t.Errorf("body %s; want %s", got, tc.body)
			}
			if got := env.fb.lastCall(t).req.(*kvpb.TxnStatusRequest); !proto.Equal(got, tc.want) {
				t.Errorf("backend got %v; want %v", got, tc.want)
			}
		})
	}

	bad := []struct{ name, query, want string }{
		{"no id", "?key=a", "query parameter id is required"},
		{"bad id", "?id=a%20b", `transaction id "a b"`},
		{"bad abort flag", "?id=t1&abort_if_pending=maybe", "abort_if_pending"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			env := newHTTPEnv(t, testLimits())
			eb := wantHTTPError(t, env.do("GET", "/v1/txn/status"+tc.query, nil), http.StatusBadRequest, rpctypes.ReasonInvalid)
			if !strings.Contains(eb.Error, tc.want) {
				t.Errorf("error %q; want it to contain %q", eb.Error, tc.want)
			}
			if n := env.fb.numCalls(); n != 0 {
				t.Errorf("backend was called %d times", n)
			}
		})
	}
}

// TestHTTPTxnResultJSONRoundTrip: what the answer says decodes back into
// the same shape, so clients can use one struct both ways.
func TestHTTPTxnResultJSONRoundTrip(t *testing.T) {
	v := Bytes("v")
	in := rpctypes.TxnResultJSON{Succeeded: true, ID: "t", Results: []rpctypes.TxnOpResultJSON{{Get: &rpctypes.TxnGetResultJSON{Found: true, Key: Bytes("\xff"), Value: &v, Revision: 3, RangeID: 7}}},
		Headers: []rpctypes.TxnHeaderJSON{{RangeID: 7, Revision: 3}}, SessionToken: "7:3"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out rpctypes.TxnResultJSON
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if g := out.Results[0].Get; string(g.Key) != "\xff" || string(*g.Value) != "v" || g.Revision != 3 || out.SessionToken != "7:3" {
		t.Errorf("round trip of %s gave %+v", b, out)
	}
}
