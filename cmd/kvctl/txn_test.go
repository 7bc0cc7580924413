package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func tPut(k, v string, lease int64) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v), Lease: lease}}}
}

func tDel(k string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteRequest{Key: []byte(k)}}}
}

func tGet(k string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}}
}

func tScan(sc *kvpb.ScanRequest) *kvpb.TxnOp { return &kvpb.TxnOp{Op: &kvpb.TxnOp_Scan{Scan: sc}} }

func cmp(k string, target kvpb.Compare_Target, result kvpb.Compare_Result, set func(*kvpb.Compare)) *kvpb.Compare {
	c := &kvpb.Compare{Key: []byte(k), Target: target, Result: result}
	if set != nil {
		set(c)
	}
	return c
}

func TestParseTxn(t *testing.T) {
	const (
		eq, ne, gt, lt = kvpb.Compare_RESULT_EQUAL, kvpb.Compare_RESULT_NOT_EQUAL, kvpb.Compare_RESULT_GREATER, kvpb.Compare_RESULT_LESS
	)
	tests := []struct {
		name, in string
		want     *kvpb.TxnRequest
	}{
		{"every compare and operation",
			"value(\"a\") = \"1\"\nversion(\"b\") > 3\nexists(\"c\") = false\nrevision(\"d\") = 7:120\n\n" +
				"put a 2\nput e \"x y\" --lease 7587\ndel x\nget b\nscan p/ --limit 10\nscan --start a --end b\n\n" +
				"get a\ndelete y\n",
			&kvpb.TxnRequest{
				Compares: []*kvpb.Compare{
					cmp("a", kvpb.Compare_TARGET_VALUE, eq, func(c *kvpb.Compare) { c.Value = []byte("1") }),
					cmp("b", kvpb.Compare_TARGET_VERSION, gt, func(c *kvpb.Compare) { c.Version = 3 }),
					cmp("c", kvpb.Compare_TARGET_EXISTS, eq, nil),
					cmp("d", kvpb.Compare_TARGET_REVISION, eq, func(c *kvpb.Compare) { c.RangeId, c.Index = 7, 120 }),
				},
				Success: []*kvpb.TxnOp{tPut("a", "2", 0), tPut("e", "x y", 7587), tDel("x"), tGet("b"),
					tScan(&kvpb.ScanRequest{Prefix: []byte("p/"), Limit: 10}), tScan(&kvpb.ScanRequest{Start: []byte("a"), End: []byte("b")})},
				Failure: []*kvpb.TxnOp{tGet("a"), tDel("y")},
			}},
		{"abbreviations, quoted numbers, spacing, comments and CRLF",
			"# a comment\r\n  val( \"a\" )!=\"\"\r\nver(b) < \"2\"\r\nexists(\"c\")!=\"true\"\r\nrev(\"d\") != \"1:0\"\r\n\r\n# success\r\nput a \"\" --lease=9\r\n",
			&kvpb.TxnRequest{
				Compares: []*kvpb.Compare{
					cmp("a", kvpb.Compare_TARGET_VALUE, ne, func(c *kvpb.Compare) { c.Value = []byte{} }),
					cmp("b", kvpb.Compare_TARGET_VERSION, lt, func(c *kvpb.Compare) { c.Version = 2 }),
					cmp("c", kvpb.Compare_TARGET_EXISTS, ne, func(c *kvpb.Compare) { c.Exists = true }),
					cmp("d", kvpb.Compare_TARGET_REVISION, ne, func(c *kvpb.Compare) { c.RangeId = 1 }),
				},
				Success: []*kvpb.TxnOp{tPut("a", "", 9)},
			}},
		{"no compares: a leading blank line", "\nput a 1\n", &kvpb.TxnRequest{Success: []*kvpb.TxnOp{tPut("a", "1", 0)}}},
		{"failure only", "value(\"a\") = \"1\"\n\n\nput a 1\n\n\n", &kvpb.TxnRequest{
			Compares: []*kvpb.Compare{cmp("a", kvpb.Compare_TARGET_VALUE, eq, func(c *kvpb.Compare) { c.Value = []byte("1") })},
			Failure:  []*kvpb.TxnOp{tPut("a", "1", 0)}}},
		{"Go escapes for bytes, a quoted flag-like word", "value(\"\\x00k\") == \"\\xff\"\n\nput \"\\x00k\" \"--lease\"\n",
			&kvpb.TxnRequest{
				Compares: []*kvpb.Compare{cmp("\x00k", kvpb.Compare_TARGET_VALUE, eq, func(c *kvpb.Compare) { c.Value = []byte{0xff} })},
				Success:  []*kvpb.TxnOp{tPut("\x00k", "--lease", 0)},
			}},
		{"no final newline", "\nget a", &kvpb.TxnRequest{Success: []*kvpb.TxnOp{tGet("a")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTxn(strings.NewReader(tc.in))
			if err != nil {
				t.Fatalf("parseTxn: %v", err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(tc.want))
			}
		})
	}
}

func TestParseTxn_BadInput(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", "no compares and no operations"},
		{"only blank lines and comments", "\n# x\n\n", "no compares and no operations"},
		{"an operation among compares", "put a 1\n", `line 1: "put a 1" is an operation, but the first block holds compares`},
		{"not a compare", "a = 1\n", `line 1: "a = 1": want TARGET("KEY") OP VALUE`},
		{"unknown target", "mod(\"a\") > 1\n", `line 1: compare target "mod": want value, version, exists or revision`},
		{"no closing paren", "value(\"a\" = \"1\"\n", "line 1: \"value(\\\"a\\\" = \\\"1\\\"\": no ) after the key"},
		{"unterminated key", "value(\"a) = 1\n", "line 1: unterminated quoted string"},
		{"empty key", "value(\"\") = \"1\"\n", "line 1: \"value(\\\"\\\") = \\\"1\\\"\": the key is empty"},
		{"unknown operator", "value(\"a\") >= \"1\"\n", "line 1: \"value(\\\"a\\\") >= \\\"1\\\"\": want one of = != > <"},
		{"no value", "value(\"a\") =\n", "want one value after the operator, got 0 words"},
		{"two values", "value(\"a\") = x y\n", "want one value after the operator, got 2 words"},
		{"bad version", "version(\"a\") = -1\n", `line 1: version "-1": want a non-negative integer`},
		{"bad existence", "exists(\"a\") = yes\n", `line 1: exists "yes": want true or false`},
		{"existence as greater", "exists(\"a\") > true\n", "exists compares with = or != only"},
		{"revision without range", "revision(\"a\") = 120\n", `line 1: revision "120": want RANGE:INDEX`},
		{"revision in range 0", "revision(\"a\") = 0:120\n", "a range id is never 0"},
		{"bad escape", "value(\"a\") = \"\\q\"\n", "line 1: bad quoted string"},
		{"quote runs into a word", "\nput \"a\"b 1\n", `line 2: quoted string "a" runs into "b 1"`},
		{"unknown operation", "\nincr a\n", `line 2: operation "incr": want put, del, get or scan`},
		{"put without value", "\nput a\n", `line 2: "put a": want put KEY VALUE [--lease ID]`},
		{"put with a bad lease", "\nput a 1 --lease x\n", `line 2: lease id "x"`},
		{"flag without value", "\nput a 1 --lease\n", "line 2: flag --lease needs a value"},
		{"unknown flag", "\nput a 1 --ttl 3\n", "line 2: unknown flag --ttl (want --lease"},
		{"flag on get", "\nget a --limit 3\n", "line 2: unknown flag --limit (quote"},
		{"flag twice", "\nscan p --limit 1 --limit 2\n", "line 2: flag --limit given twice"},
		{"get of two keys", "\nget a b\n", `line 2: "get a b": want get KEY`},
		{"scan with prefix and start", "\nscan p --start a\n", "want scan PREFIX [--limit N] or scan --start START"},
		{"scan with a bad limit", "\nscan p --limit -1\n", `line 2: --limit "-1": want a non-negative integer`},
		{"scan of an empty prefix", "\nscan \"\"\n", "a scan needs a non-empty prefix or start"},
		{"a fourth block", "\nput a 1\n\nput b 2\n\nput c 3\n", `line 6: "put c 3" after the failure block`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTxn(strings.NewReader(tc.in))
			if err == nil {
				t.Fatalf("parseTxn(%q) = %v; want an error", tc.in, got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestKvctl_Txn runs kvctl txn against a fake node: its outputs, and its
// exit codes for each way a transaction ends.
func TestKvctl_Txn(t *testing.T) {
	const transfer = "value(\"a\") = \"100\"\n\nput a 90\nput b 110\nget a\nget nope\ndel a\nscan p/\n\nget a\n"
	tests := []struct {
		name       string
		script     func(*clienttest.Server)
		args       []string
		stdin      string
		wantCode   int
		wantOut    string // exact, when set
		wantOutHas string
		wantErrHas string
		wantA      string
	}{
		{name: "success, simple", args: []string{"txn"}, stdin: transfer, wantCode: exitOK,
			wantOut: "SUCCESS\n\nOK\n\nOK\n\na\n90\n\n\n1\n\np/1\tx\n", wantA: ""},
		{name: "failure, simple", args: []string{"txn"}, stdin: strings.Replace(transfer, "100", "7", 1), wantCode: exitOK,
			wantOut: "FAILURE\n\na\n100\n", wantA: "100"},
		{name: "json", args: []string{"-w", "json", "txn", "--id", "t-1"}, stdin: "value(\"a\") = \"100\"\n\nput a 1\nget nope\n",
			wantCode: exitOK, wantOutHas: `"succeeded":true,"id":"t-1","results":[{"put":{"range_id":1,"revision":3}},{"get":{"found":false,"key":"nope","range_id":1}}],"headers":[{"range_id":1,"revision":3,`,
			wantA: "1"},
		{name: "table", args: []string{"-w", "table", "txn"}, stdin: "\nget a\n", wantCode: exitOK,
			wantOutHas: "SUCCESS\nOP   KEY  VALUE  REVISION  RANGE\nget  a    100    1         1\n", wantA: "100"},
		{name: "from a file", args: []string{"txn", "--file", "{file}"}, stdin: "ignored", wantCode: exitOK, wantOut: "SUCCESS\n\nOK\n", wantA: "5"},
		{name: "a missing file", args: []string{"txn", "--file", "{dir}/nope"}, wantCode: exitUsage, wantErrHas: "--file: open"},
		{name: "bad input", args: []string{"txn"}, stdin: "value(a) ~ 1\n", wantCode: exitUsage, wantErrHas: "txn: stdin: line 1:", wantA: "100"},
		{name: "conflict", script: func(s *clienttest.Server) {
			s.Fail(clienttest.MethodTxn, 1, rpctypes.Error(codes.Aborted, rpctypes.ReasonTxnConflict, "locked", nil))
		}, args: []string{"txn"}, stdin: transfer, wantCode: exitCompareFailed, wantErrHas: "TXN_CONFLICT", wantA: "100"},
		{name: "scan across ranges", script: func(s *clienttest.Server) {
			s.Fail(clienttest.MethodTxn, 1, rpctypes.Error(codes.FailedPrecondition, rpctypes.ReasonCrossRange, "scan spans ranges", nil))
		}, args: []string{"txn"}, stdin: "\nscan a\n", wantCode: exitUsage, wantErrHas: "CROSS_RANGE", wantA: "100"},
		{name: "outcome unknown names the id and how to settle it", script: func(s *clienttest.Server) {
			s.Fail(clienttest.MethodTxnApplied, 1, clienttest.Indeterminate())
		}, args: []string{"txn", "--id", "t-9"}, stdin: "\nput \"a b\" 1\n", wantCode: exitUnavailable,
			wantErrHas: "transaction t-9: txn: outcome unknown", wantA: "100"},
		{name: "an id the server refuses", script: func(s *clienttest.Server) {
			s.Fail(clienttest.MethodTxn, 1, rpctypes.Error(codes.InvalidArgument, rpctypes.ReasonInvalid, "transaction id", nil))
		}, args: []string{"txn", "--id", "a b"}, stdin: "\nput a 1\n", wantCode: exitUsage, wantA: "100"},
		{name: "arguments", args: []string{"txn", "extra"}, wantCode: exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.Put([]byte("a"), []byte("100"))
			srv.Store.Put([]byte("p/1"), []byte("x"))
			if tc.script != nil {
				tc.script(srv)
			}
			dir := t.TempDir()
			file := filepath.Join(dir, "txn")
			if err := os.WriteFile(file, []byte("value(\"a\") = \"100\"\n\nput a 5\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.NewReplacer("{file}", file, "{dir}", dir).Replace(a)
			}
			r := kvctl(t, invocation{stdin: tc.stdin}, at(srv.Addr, args...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d; want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if tc.wantOut != "" && r.stdout != tc.wantOut {
				t.Errorf("stdout %q; want %q", r.stdout, tc.wantOut)
			}
			if !strings.Contains(r.stdout, tc.wantOutHas) {
				t.Errorf("stdout %q; want it to contain %q", r.stdout, tc.wantOutHas)
			}
			if !strings.Contains(r.stderr, tc.wantErrHas) {
				t.Errorf("stderr %q; want it to contain %q", r.stderr, tc.wantErrHas)
			}
			if tc.name == "outcome unknown names the id and how to settle it" && !strings.Contains(r.stderr, "kvctl txn status t-9 --key 'a b' --abort") {
				t.Errorf("stderr %q does not say how to settle the transaction", r.stderr)
			}
			if tc.wantA != "" || tc.name == "success, simple" {
				if v, _ := srv.Store.Value([]byte("a")); string(v) != tc.wantA {
					t.Errorf("a = %q afterwards; want %q", v, tc.wantA)
				}
			}
		})
	}
}

func TestKvctl_TxnStatus(t *testing.T) {
	srv := clienttest.Start(t)
	mustRun(t, invocation{stdin: "\nput k v\n"}, at(srv.Addr, "txn", "--id", "t1")...)
	mustRun(t, invocation{stdin: "value(\"k\") = \"x\"\n\nput k w\n"}, at(srv.Addr, "txn", "--id", "t2")...)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"txn", "status", "t1", "--key", "k"}, "COMMITTED SUCCESS\n"},
		{[]string{"txn", "status", "t2"}, "COMMITTED FAILURE\n"},
		{[]string{"txn", "status", "t3"}, "PENDING\n"},
		{[]string{"-w", "json", "txn", "status", "t3", "--abort"}, `{"id":"t3","state":"ABORTED","succeeded":false}` + "\n"},
		{[]string{"-w", "table", "txn", "status", "t1"}, "ID  STATE      SUCCEEDED\nt1  COMMITTED  yes\n"},
	}
	for _, tc := range tests {
		if got := mustRun(t, invocation{}, at(srv.Addr, tc.args...)...); got != tc.want {
			t.Errorf("kvctl %v printed %q; want %q", tc.args, got, tc.want)
		}
	}
	if r := kvctl(t, invocation{}, at(srv.Addr, "txn", "status")...); r.code != exitUsage {
		t.Errorf("txn status without an id: exit %d; want %d", r.code, exitUsage)
	}
}
