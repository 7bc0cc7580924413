package api

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The README is the user's reference for this package's API. These tests
// hold its gRPC and HTTP tables, and docs/api.md's gRPC and error tables,
// to the code, both ways: an RPC, a
// route or a reason cannot ship undocumented, and a documented one cannot
// quietly disappear. Each failure names the row to add or remove.

const (
	readmePath = "../README.md"
	// apiDocPath holds the gRPC table method by method (the README lists
	// the methods per service) and the error table.
	apiDocPath = "../docs/api.md"
)

func TestREADME_GRPCTableNamesEveryClientRPC(t *testing.T) {
	services := protoServices(t)
	if len(services["KV"]) == 0 || len(services["Cluster"]) == 0 {
		t.Fatalf("found no KV or Cluster rpcs in kv.proto (%v): the proto parser is broken", services)
	}
	// checkListed holds a documented set of Service.Method names to the
	// proto, both ways.
	checkListed := func(where string, documented map[string]bool) {
		for name := range documented {
			svc, method, _ := strings.Cut(name, ".")
			if svc == "Internal" {
				t.Errorf("%s lists %s, but kv.v1.Internal is served only on the peer port: remove it", where, name)
			} else if !slices.Contains(services[svc], method) {
				t.Errorf("%s lists %s, which api/proto/kv/v1/kv.proto does not define: remove or rename it", where, name)
			}
		}
		for svc, methods := range services {
			if svc == "Internal" {
				continue
			}
			for _, m := range methods {
				if !documented[svc+"."+m] {
					t.Errorf("%s lacks kv.v1.%s/%s: add it", where, svc, m)
				}
			}
		}
	}

	// docs/api.md: one row per method, | `Service` | `Method` | does |.
	full := map[string]bool{}
	for _, r := range docTable(t, apiDocPath, "gRPC API") {
		if len(r) < 3 {
			t.Errorf("docs/api.md gRPC API table: row %q needs service, method and what it does", r)
			continue
		}
		full[unquote(r[0])+"."+unquote(r[1])] = true
	}
	checkListed("the docs/api.md gRPC API table", full)

	// The README: one row per service, | `Service` | for | `M1`, `M2` |.
	brief := map[string]bool{}
	for _, r := range readmeTable(t, "gRPC API") {
		if len(r) < 3 {
			t.Errorf("README gRPC API table: row %q needs service, use and methods", r)
			continue
		}
		for _, m := range strings.Split(r[2], ",") {
			brief[unquote(r[0])+"."+unquote(strings.TrimSpace(m))] = true
		}
	}
	checkListed("the README gRPC API table", brief)

	// Every full method name the README spells out (grpcurl examples) exists.
	for _, m := range regexp.MustCompile(`kv\.v1\.(\w+)/(\w+)`).FindAllStringSubmatch(readFile(t, readmePath), -1) {
		if !slices.Contains(services[m[1]], m[2]) {
			t.Errorf("README names %s, which kv.proto does not define", m[0])
		}
	}
}

func TestAPIDoc_ErrorTableMatchesReasonsCodesAndStatuses(t *testing.T) {
	reasons := reasonConstants(t)
	type row struct {
		reasons               []rpctypes.Reason
		clientCodes, allCodes []codes.Code
		statuses              []int
	}
	var rows []*row
	byReason := map[rpctypes.Reason]*row{}
	for _, cells := range docTable(t, apiDocPath, "Errors") {
		if len(cells) < 3 {
			t.Errorf("docs/api.md Errors table: row %q needs reason, gRPC code and HTTP columns", cells)
			continue
		}
		r := &row{
			clientCodes: codeNames(parenthetical.ReplaceAllString(cells[1], "")),
			allCodes:    codeNames(cells[1]),
			statuses:    numbers(cells[2]),
		}
		for _, s := range codeSpans(cells[0]) {
			r.reasons = append(r.reasons, rpctypes.Reason(s))
		}
		if len(r.reasons) == 0 || len(r.allCodes) == 0 || len(r.statuses) == 0 {
			t.Errorf("docs/api.md Errors table: row %q needs a `REASON`, a gRPC code and an HTTP status", cells)
			continue
		}
		rows = append(rows, r)
		for _, reason := range r.reasons {
			if _, dup := byReason[reason]; dup {
				t.Errorf("docs/api.md Errors table lists %s twice", reason)
			}
			if !slices.Contains(reasons, reason) {
				t.Errorf("docs/api.md Errors table lists %s, which is no Reason in api/rpctypes: remove the row", reason)
			}
			byReason[reason] = r
		}
	}
	for _, reason := range reasons {
		if byReason[reason] == nil {
			t.Errorf("docs/api.md Errors table lacks reason %s (api/rpctypes): add | `%s` | gRPC code | HTTP status | meaning |", reason, reason)
		}
	}

	// Every (reason, code) pair the server produces is the one documented.
	for _, p := range producedErrors() {
		reason, got := rpctypes.ReasonOf(p.err), status.Code(p.err)
		if r := byReason[reason]; r != nil && !slices.Contains(r.allCodes, got) {
			t.Errorf("%s: the server answers %s with gRPC code %s, but the docs/api.md Errors table says %v", p.what, reason, got, r.allCodes)
		}
	}

	// The HTTP column is what httpStatus makes of the row's reasons and
	// codes: no more, no less. Codes in parentheses are peer-port only;
	// no HTTP client sees them.
	for _, r := range rows {
		var want []int
		for _, reason := range r.reasons {
			for _, c := range r.clientCodes {
				if s := httpStatus(rpctypes.Error(c, reason, "", nil)); !slices.Contains(want, s) {
					want = append(want, s)
				}
			}
		}
		slices.Sort(want)
		got := slices.Clone(r.statuses)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("docs/api.md Errors table: %v with %v is HTTP %v, but the table says %v", r.reasons, r.clientCodes, want, got)
		}
	}
}

func TestREADME_HTTPTableNamesEveryRoute(t *testing.T) {
	routes := registeredRoutes(t)
	if len(routes) == 0 {
		t.Fatal("found no HandleFunc/Handle patterns in api/*.go: the route parser is broken")
	}
	documented := map[string]bool{}
	re := regexp.MustCompile("`(GET|HEAD|POST|PUT|PATCH|DELETE) (/[^`?\\s]*)")
	for _, r := range readmeTable(t, "HTTP API") {
		for _, m := range re.FindAllStringSubmatch(r[0], -1) {
			route := m[1] + " " + m[2]
			documented[route] = true
			if !routes[route] {
				t.Errorf("README HTTP API table lists %s, which api/*.go does not register: remove or fix the row", route)
			}
		}
	}
	for route := range routes {
		if !documented[route] {
			t.Errorf("README HTTP API table lacks %s (registered in api/*.go): add a row | `%s` | answer |", route, route)
		}
	}
}

// producedError is an error as the server's edge builds it.
type producedError struct {
	what string
	err  error
}

// producedErrors is every reason-carrying error the edge makes that a
// test can provoke without a cluster: each errorTable rule, the cases
// classify decides itself, input errors and /readyz's answers.
func producedErrors() []producedError {
	var out []producedError
	for _, r := range errorTable {
		out = append(out, producedError{fmt.Sprintf("errorTable rule for %v", r.err), classify(fmt.Errorf("wrapped: %w", r.err), opWrite, false)})
	}
	return append(out,
		producedError{"invalid input", classify(invalid("bad"), opWrite, false)},
		producedError{"too large input", classify(tooLarge("big"), opWrite, false)},
		producedError{"a write past its deadline", classify(context.DeadlineExceeded, opWrite, true)},
		producedError{"a read past the request's deadline", classify(context.DeadlineExceeded, opRead, true)},
		producedError{"a read past a backend bound", classify(context.DeadlineExceeded, opRead, false)},
		producedError{"an error with no rule", classify(errors.New("surprise"), opWrite, false)},
		producedError{"/readyz on a full disk", notReady(replication.ErrDiskFull)},
		producedError{"/readyz without a leader", notReady(replication.ErrNoLeader)},
		producedError{"/readyz otherwise", notReady(errors.New("starting"))},
	)
}

// protoServices returns each service's rpc names, in the proto's order.
func protoServices(t *testing.T) map[string][]string {
	t.Helper()
	src := readFile(t, "proto/kv/v1/kv.proto")
	out := map[string][]string{}
	for _, s := range regexp.MustCompile(`(?ms)^service (\w+) \{(.*?)^\}`).FindAllStringSubmatch(src, -1) {
		for _, m := range regexp.MustCompile(`(?m)^\s*rpc (\w+)\s*\(`).FindAllStringSubmatch(s[2], -1) {
			out[s[1]] = append(out[s[1]], m[1])
		}
	}
	return out
}

// reasonConstants returns the values of every constant of type Reason
// declared in api/rpctypes.
func reasonConstants(t *testing.T) []rpctypes.Reason {
	t.Helper()
	var out []rpctypes.Reason
	for _, f := range parseDir(t, "rpctypes") {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				v := spec.(*ast.ValueSpec)
				if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for _, val := range v.Values {
					lit, ok := val.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("a Reason constant is not a string literal: %#v", val)
					}
					s, _ := strconv.Unquote(lit.Value)
					out = append(out, rpctypes.Reason(s))
				}
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d Reason constants in api/rpctypes: the parser is broken", len(out))
	}
	return out
}

// registeredRoutes returns "METHOD /path" for every pattern the package's
// code registers with a ServeMux (Handle or HandleFunc with a literal
// pattern), wildcards written without "...".
func registeredRoutes(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, f := range parseDir(t, ".") {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			p, _ := strconv.Unquote(lit.Value)
			if method, path, ok := strings.Cut(p, " "); ok && strings.HasPrefix(path, "/") {
				out[method+" "+strings.ReplaceAll(path, "...}", "}")] = true
			}
			return true
		})
	}
	return out
}

// parseDir parses the non-test Go files of dir.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*ast.File
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		out = append(out, f)
	}
	return out
}

// readmeTable returns the cells of every body row of the first table in
// the README section with the given heading.
func readmeTable(t *testing.T, heading string) [][]string {
	t.Helper()
	return docTable(t, readmePath, heading)
}

// docTable returns the cells of every body row of the first table in the
// section of the Markdown file at path with the given heading.
func docTable(t *testing.T, path, heading string) [][]string {
	t.Helper()
	doc := readFile(t, path)
	start := strings.Index(doc, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("%s has no section %q", path, "## "+heading)
	}
	body := doc[start+len(heading)+5:]
	if end := strings.Index(body, "\n## "); end >= 0 {
		body = body[:end]
	}
	var rows [][]string
	inTable := false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		if !inTable { // the header row
			inTable = true
			continue
		}
		if strings.Trim(line, "|-: ") == "" { // the separator row
			continue
		}
		rows = append(rows, splitRow(line))
	}
	if len(rows) == 0 {
		t.Fatalf("%s section %q has no table", path, heading)
	}
	return rows
}

// splitRow splits a Markdown table row into trimmed cells; `\|` is a
// literal bar inside a cell.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

var parenthetical = regexp.MustCompile(`\([^)]*\)`)

func unquote(cell string) string { return strings.Trim(cell, "` ") }

// codeSpans returns the contents of the `code` spans in s.
func codeSpans(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// codeNames returns the gRPC codes named in s by their Go names.
func codeNames(s string) []codes.Code {
	byName := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		byName[c.String()] = c
	}
	var out []codes.Code
	for _, w := range regexp.MustCompile(`[A-Z][A-Za-z]+`).FindAllString(s, -1) {
		if c, ok := byName[w]; ok && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func numbers(s string) []int {
	var out []int
	for _, m := range regexp.MustCompile(`\b\d{3}\b`).FindAllString(s, -1) {
		n, _ := strconv.Atoi(m)
		out = append(out, n)
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
