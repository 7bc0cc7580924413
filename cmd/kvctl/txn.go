package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

const txnLong = `Run a transaction: if every compare holds, the success operations run,
else the failure operations, all at one point and atomically, whether the
keys share a range or not (see the README's Transactions section).

The transaction is read from --file, else from stdin until end of input
(Ctrl-D on a terminal), in three blocks separated by one blank line each:
compares, success operations, failure operations. A block may be empty
(a transaction without compares starts with a blank line). Lines starting
with # are comments. Words are separated by spaces; a word in double
quotes is a Go string literal ("a b", "\x00\xff", "" for empty).

Compares, one per line, TARGET("KEY") OP VALUE:
  value("k") = "v"          the value (OP: = != > <; a missing key never holds)
  version("k") > 3          writes since the key was created (0: missing)
  exists("k") = false       whether the key exists (OP: = !=)
  revision("k") = 7:120     the range and index the key was last written at
                            (range list; get -w json's range_id and revision)
val, ver and rev abbreviate value, version and revision.

Operations, one per line:
  put KEY VALUE [--lease ID]
  del KEY
  get KEY
  scan PREFIX [--limit N]
  scan --start START [--end END] [--limit N]

Example (a transfer):
  value("acct/a") = "100"
  exists("acct/b") = true

  put acct/a 90
  put acct/b 110

  get acct/a

Output: SUCCESS or FAILURE, then each operation's result after a blank
line: put prints OK, del 1 or 0, get the key and the value on two lines
(nothing for a missing key), scan KEY<TAB>VALUE lines. -w json prints one
object: {"succeeded", "id", "results": [{"put": {"range_id", "revision"}} |
{"delete": {..., "deleted"}} | {"get": {"found", "key", "value",
"revision", "range_id"}} | {"scan": {"kvs", "more", "next_key",
"range_id"}}], "headers": [{"range_id", "revision", ...}],
"session_token"}.

Exit codes: 0 whether SUCCESS or FAILURE ran (as etcdctl; the first line,
or json's "succeeded", tells which); 2 for input kvctl or the server
refuses, including a scan over keys of several ranges (CROSS_RANGE);
5 when the transaction met other transactions and did nothing
(TXN_CONFLICT: run it again); 3 when its outcome is unknown: the error
names its id, and "kvctl txn status ID --key KEY --abort" settles it.`

// maxTxnInput bounds what txn reads; the server's own limits are lower.
const maxTxnInput = 64 << 20

func (a *app) txnCmd() *cobra.Command {
	var file, id string
	cmd := &cobra.Command{
		Use:   "txn [--file F] [--id ID]",
		Short: "Run a transaction: compares, then success or failure operations, atomically",
		Long:  txnLong,
		Args:  cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			src := a.env.stdin
			name := "stdin"
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				defer f.Close()
				src, name = f, file
			}
			req, err := parseTxn(io.LimitReader(src, maxTxnInput+1))
			if err != nil {
				return usagef("txn: %s: %v", name, err)
			}
			req.Id = id
			if req.Id == "" {
				req.Id = client.NewTxnID()
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Txn(ctx, req)
				switch {
				case err == nil:
					return a.printTxn(req, resp)
				case client.IsCrossRange(err):
					return codedError{exitUsage, err}
				case client.IsIndeterminate(err):
					return codedError{exitUnavailable, fmt.Errorf("transaction %s: %w; settle it with: kvctl txn status %s --key %s --abort",
						req.Id, err, req.Id, shellWord(client.TxnKey(req)))}
				}
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "read the transaction from F instead of stdin")
	cmd.Flags().StringVar(&id, "id", "", "the transaction's id, for txn status (default: a random one)")
	cmd.AddCommand(a.txnStatusCmd())
	return cmd
}

func (a *app) txnStatusCmd() *cobra.Command {
	var (
		key   string
		abort bool
	)
	cmd := &cobra.Command{
		Use:   "status ID [--key K] [--abort]",
		Short: "Tell what became of a transaction: COMMITTED, ABORTED or PENDING",
		Long: `Print what became of transaction ID: COMMITTED SUCCESS or COMMITTED
FAILURE (committed, and which branch ran), ABORTED (nothing of it was
applied, nor ever will be) or PENDING (not decided yet). --key names a key
the transaction touched: a transaction in one range is found only through
one. --abort aborts a pending transaction first, so that the answer is
final. json: {"id", "state", "succeeded"}.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var k []byte
				if key != "" {
					k = []byte(key)
				}
				resp, err := c.TxnStatus(ctx, args[0], k, abort)
				if err != nil {
					return err
				}
				return a.printTxnStatus(resp)
			})
		}),
	}
	cmd.Flags().StringVar(&key, "key", "", "a key the transaction compared, read or wrote")
	cmd.Flags().BoolVar(&abort, "abort", false, "abort the transaction if it is still pending")
	return cmd
}

// shellWord quotes k for a shell when it needs it.
func shellWord(k []byte) string {
	s := string(k)
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '-' || r == '_' || r == '.' || r == ':' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ---- the input format ----

// token is one word of a line: its text, and whether it was quoted (a
// quoted word is never a flag).
type token struct {
	text   string
	quoted bool
}

// scanQuoted reads the Go string literal at the start of s and returns
// its value and length.
func scanQuoted(s string) (string, int, error) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			if err != nil {
				return "", 0, fmt.Errorf("bad quoted string %s: %v", s[:i+1], err)
			}
			return v, i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated quoted string %s", s)
}

// words splits a line into tokens.
func words(line string) ([]token, error) {
	var out []token
	for {
		line = strings.TrimLeft(line, " \t")
		if line == "" {
			return out, nil
		}
		if line[0] == '"' {
			v, n, err := scanQuoted(line)
			if err != nil {
				return nil, err
			}
			if n < len(line) && line[n] != ' ' && line[n] != '\t' {
				return nil, fmt.Errorf("quoted string %s runs into %q: put a space between words", line[:n], line[n:])
			}
			out = append(out, token{text: v, quoted: true})
			line = line[n:]
			continue
		}
		end := strings.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		out = append(out, token{text: line[:end]})
		line = line[end:]
	}
}

// parseTxn reads the three blocks of a transaction.
func parseTxn(r io.Reader) (*kvpb.TxnRequest, error) {
	req := &kvpb.TxnRequest{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTxnInput+1)
	block, n, read := 0, 0, 0
	for sc.Scan() {
		n++
		read += len(sc.Bytes()) + 1
		if read > maxTxnInput {
			return nil, fmt.Errorf("input is larger than %d bytes", maxTxnInput)
		}
		line := strings.TrimSpace(string(bytes.TrimSuffix(sc.Bytes(), []byte("\r"))))
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case line == "":
			block++
			continue
		case block > 2:
			return nil, fmt.Errorf("line %d: %q after the failure block: a transaction has three blocks (compares, success, failure) separated by one blank line each", n, line)
		}
		var err error
		switch block {
		case 0:
			var c *kvpb.Compare
			if c, err = parseCompare(line); err == nil {
				req.Compares = append(req.Compares, c)
			}
		default:
			var o *kvpb.TxnOp
			if o, err = parseOp(line); err == nil {
				if block == 1 {
					req.Success = append(req.Success, o)
				} else {
					req.Failure = append(req.Failure, o)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %d bytes", n+1, maxTxnInput)
		}
		return nil, fmt.Errorf("reading: %w", err)
	}
	if len(req.Compares)+len(req.Success)+len(req.Failure) == 0 {
		return nil, errors.New("no compares and no operations")
	}
	return req, nil
}

var compareTargets = map[string]kvpb.Compare_Target{
	"value": kvpb.Compare_TARGET_VALUE, "val": kvpb.Compare_TARGET_VALUE,
	"version": kvpb.Compare_TARGET_VERSION, "ver": kvpb.Compare_TARGET_VERSION,
	"exists":   kvpb.Compare_TARGET_EXISTS,
	"revision": kvpb.Compare_TARGET_REVISION, "rev": kvpb.Compare_TARGET_REVISION,
}

// compareOps, longest first so that "!=" is not read as "!".
var compareOps = []struct {
	text   string
	result kvpb.Compare_Result
}{
	{"!=", kvpb.Compare_RESULT_NOT_EQUAL}, {"==", kvpb.Compare_RESULT_EQUAL},
	{"=", kvpb.Compare_RESULT_EQUAL}, {">", kvpb.Compare_RESULT_GREATER}, {"<", kvpb.Compare_RESULT_LESS},
}

const compareForm = `want TARGET("KEY") OP VALUE, e.g. value("k") = "v"`

// parseCompare reads TARGET("KEY") OP VALUE.
func parseCompare(line string) (*kvpb.Compare, error) {
	open := strings.IndexByte(line, '(')
	if open < 0 {
		if _, err := parseOp(line); err == nil {
			return nil, fmt.Errorf("%q is an operation, but the first block holds compares: start with a blank line for a transaction without compares", line)
		}
		return nil, fmt.Errorf("%q: %s", line, compareForm)
	}
	name := strings.TrimSpace(line[:open])
	target, ok := compareTargets[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("compare target %q: want value, version, exists or revision", name)
	}
	rest := strings.TrimLeft(line[open+1:], " \t")
	var key string
	if strings.HasPrefix(rest, `"`) {
		k, n, err := scanQuoted(rest)
		if err != nil {
			return nil, err
		}
		key, rest = k, strings.TrimLeft(rest[n:], " \t")
		if !strings.HasPrefix(rest, ")") {
			return nil, fmt.Errorf("%q: no ) after the key; %s", line, compareForm)
		}
	} else {
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return nil, fmt.Errorf("%q: no ) after the key; %s", line, compareForm)
		}
		key, rest = strings.TrimSpace(rest[:end]), rest[end:]
	}
	if key == "" {
		return nil, fmt.Errorf("%q: the key is empty", line)
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	c := &kvpb.Compare{Key: []byte(key), Target: target}
	found := false
	for _, op := range compareOps {
		if strings.HasPrefix(rest, op.text) {
			c.Result, rest, found = op.result, rest[len(op.text):], true
			break
		}
	}
	if !found || strings.ContainsAny(rest[:min(1, len(rest))], "=<>!") {
		// ">=" would otherwise read as ">" and a value "=...".
		return nil, fmt.Errorf("%q: want one of = != > < after %s(...)", line, name)
	}
	toks, err := words(rest)
	if err != nil {
		return nil, err
	}
	if len(toks) != 1 {
		return nil, fmt.Errorf("%q: want one value after the operator, got %d words (quote a value with spaces)", line, len(toks))
	}
	v := toks[0].text
	switch target {
	case kvpb.Compare_TARGET_VALUE:
		c.Value = []byte(v)
	case kvpb.Compare_TARGET_VERSION:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("version %q: want a non-negative integer", v)
		}
		c.Version = n
	case kvpb.Compare_TARGET_EXISTS:
		if c.Result != kvpb.Compare_RESULT_EQUAL && c.Result != kvpb.Compare_RESULT_NOT_EQUAL {
			return nil, fmt.Errorf("%q: exists compares with = or != only", line)
		}
		switch v {
		case "true":
			c.Exists = true
		case "false":
		default:
			return nil, fmt.Errorf("exists %q: want true or false", v)
		}
	case kvpb.Compare_TARGET_REVISION:
		r, i, ok := strings.Cut(v, ":")
		rangeID, err1 := strconv.ParseUint(r, 10, 64)
		index, err2 := strconv.ParseUint(i, 10, 64)
		if !ok || err1 != nil || err2 != nil || rangeID == 0 {
			return nil, fmt.Errorf("revision %q: want RANGE:INDEX, e.g. 7:120 (a range id is never 0)", v)
		}
		c.RangeId, c.Index = rangeID, index
	}
	return c, nil
}

// opFlags separates an operation's positional words from its --flags
// (--name VALUE or --name=VALUE), refusing flags not in allowed.
func opFlags(toks []token, allowed ...string) ([]string, map[string]string, error) {
	var pos []string
	flags := map[string]string{}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.quoted || !strings.HasPrefix(t.text, "--") {
			pos = append(pos, t.text)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(t.text, "--"), "=")
		known := false
		for _, a := range allowed {
			known = known || a == name
		}
		if !known {
			if len(allowed) == 0 {
				return nil, nil, fmt.Errorf("unknown flag --%s (quote a word that starts with --)", name)
			}
			return nil, nil, fmt.Errorf("unknown flag --%s (want --%s; quote a word that starts with --)", name, strings.Join(allowed, ", --"))
		}
		if !hasVal {
			if i+1 == len(toks) {
				return nil, nil, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = toks[i].text
		}
		if _, dup := flags[name]; dup {
			return nil, nil, fmt.Errorf("flag --%s given twice", name)
		}
		flags[name] = val
	}
	return pos, flags, nil
}

// parseOp reads put, del, get or scan.
func parseOp(line string) (*kvpb.TxnOp, error) {
	toks, err := words(line)
	if err != nil {
		return nil, err
	}
	verb := strings.ToLower(toks[0].text)
	args := toks[1:]
	want := func(form string, pos []string, n int) error {
		if len(pos) != n {
			return fmt.Errorf("%q: want %s", line, form)
		}
		return nil
	}
	switch verb {
	case "put":
		pos, flags, err := opFlags(args, "lease")
		if err != nil {
			return nil, err
		}
		if err := want("put KEY VALUE [--lease ID]", pos, 2); err != nil {
			return nil, err
		}
		p := &kvpb.PutRequest{Key: []byte(pos[0]), Value: []byte(pos[1])}
		if l, ok := flags["lease"]; ok {
			if p.Lease, err = parseLeaseID(l); err != nil {
				return nil, err
			}
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: p}}, nil
	case "del", "delete":
		pos, _, err := opFlags(args)
		if err != nil {
			return nil, err
		}
		if err := want("del KEY", pos, 1); err != nil {
			return nil, err
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Delete{Delete: &kvpb.DeleteRequest{Key: []byte(pos[0])}}}, nil
	case "get":
		pos, _, err := opFlags(args)
		if err != nil {
			return nil, err
		}
		if err := want("get KEY", pos, 1); err != nil {
			return nil, err
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(pos[0])}}}, nil
	case "scan":
		pos, flags, err := opFlags(args, "limit", "start", "end")
		if err != nil {
			return nil, err
		}
		sc := &kvpb.ScanRequest{}
		_, hasStart := flags["start"]
		_, hasEnd := flags["end"]
		switch {
		case len(pos) == 1 && !hasStart && !hasEnd:
			sc.Prefix = []byte(pos[0])
		case len(pos) == 0 && hasStart:
			sc.Start, sc.End = []byte(flags["start"]), []byte(flags["end"])
		default:
			return nil, fmt.Errorf("%q: want scan PREFIX [--limit N] or scan --start START [--end END] [--limit N]", line)
		}
		if l, ok := flags["limit"]; ok {
			n, err := strconv.ParseUint(l, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--limit %q: want a non-negative integer", l)
			}
			sc.Limit = uint32(n)
		}
		if len(sc.Prefix) == 0 && len(sc.Start) == 0 {
			return nil, fmt.Errorf("%q: a scan needs a non-empty prefix or start", line)
		}
		return &kvpb.TxnOp{Op: &kvpb.TxnOp_Scan{Scan: sc}}, nil
	}
	return nil, fmt.Errorf("operation %q: want put, del, get or scan", toks[0].text)
}

// ---- output ----

func (a *app) printTxn(req *kvpb.TxnRequest, resp *kvpb.TxnResponse) error {
	w := a.env.stdout
	if a.out() == formatJSON {
		return writeJSONLine(w, rpctypes.NewTxnResultJSON(req, resp))
	}
	verdict := "SUCCESS"
	if !resp.GetSucceeded() {
		verdict = "FAILURE"
	}
	if a.out() == formatTable {
		if _, err := fmt.Fprintln(w, verdict); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		t := newTable(w, "OP", "KEY", "VALUE", "REVISION", "RANGE")
		for _, r := range rpctypes.NewTxnResultJSON(req, resp).Results {
			switch {
			case r.Put != nil:
				t.row("put", "", "", u64(r.Put.Revision), u64(r.Put.RangeID))
			case r.Delete != nil:
				t.row("del", "", yesNo(*r.Delete.Deleted), u64(r.Delete.Revision), u64(r.Delete.RangeID))
			case r.Get != nil && r.Get.Found:
				t.row("get", string(r.Get.Key), string(*r.Get.Value), u64(r.Get.Revision), u64(r.Get.RangeID))
			case r.Get != nil:
				t.row("get", string(r.Get.Key), "-", "-", u64(r.Get.RangeID))
			case r.Scan != nil:
				for _, kv := range r.Scan.KVs {
					t.row("scan", string(kv.Key), string(kv.Value), u64(kv.Revision), u64(r.Scan.RangeID))
				}
			}
		}
		return t.flush()
	}
	var b bytes.Buffer
	b.WriteString(verdict + "\n")
	for _, r := range resp.GetResults() {
		b.WriteString("\n")
		switch {
		case r.GetPut() != nil:
			b.WriteString("OK\n")
		case r.GetDelete() != nil:
			if r.GetDelete().GetDeleted() {
				b.WriteString("1\n")
			} else {
				b.WriteString("0\n")
			}
		case r.GetGet() != nil:
			if kv := r.GetGet().GetKv(); kv != nil {
				b.Write(kv.GetKey())
				b.WriteByte('\n')
				b.Write(kv.GetValue())
				b.WriteByte('\n')
			}
		case r.GetScan() != nil:
			for _, kv := range r.GetScan().GetKvs() {
				b.Write(kv.GetKey())
				b.WriteByte('\t')
				b.Write(kv.GetValue())
				b.WriteByte('\n')
			}
		}
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (a *app) printTxnStatus(resp *kvpb.TxnStatusResponse) error {
	w := a.env.stdout
	state := client.TxnStateName(resp.GetState())
	switch a.out() {
	case formatJSON:
		return writeJSONLine(w, struct {
			ID        string `json:"id"`
			State     string `json:"state"`
			Succeeded bool   `json:"succeeded"`
		}{resp.GetId(), state, resp.GetSucceeded()})
	case formatTable:
		t := newTable(w, "ID", "STATE", "SUCCEEDED")
		t.row(resp.GetId(), state, yesNo(resp.GetSucceeded()))
		return t.flush()
	}
	line := state
	if resp.GetState() == kvpb.TxnState_TXN_STATE_COMMITTED {
		line += " SUCCESS"
		if !resp.GetSucceeded() {
			line = state + " FAILURE"
		}
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
