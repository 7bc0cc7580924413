package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// root is the repository, from this package's directory.
const root = "../.."

// namedTargets are the make targets users and tools depend on
// (the product interfaces list, "Build and run"): the README must keep
// documenting them.
var namedTargets = []string{"build", "run", "test", "jepsen", "jepsen-canary", "bench-compare", "lint", "crash-loop"}

func TestDocs_MakeTargetsExist(t *testing.T) {
	targets := makeTargets(t)
	for _, doc := range markdownFiles(t) {
		for _, target := range mentionedTargets(readFile(t, doc)) {
			if !targets[target] {
				t.Errorf("%s mentions `make %s`, but the Makefile has no target %q", rel(doc), target, target)
			}
		}
	}
	readme := mentionedTargets(readFile(t, filepath.Join(root, "README.md")))
	for _, target := range namedTargets {
		if !targets[target] {
			t.Errorf("the Makefile lacks the named target %q", target)
		}
		if !slices.Contains(readme, target) {
			t.Errorf("README does not document `make %s`", target)
		}
	}
}

// readmeFlags are the flags the product interfaces list names (plus the
// TLS ones a user needs to turn it on): the README, the user's guide,
// must keep them. Every other flag may live in docs/operations.md.
var readmeFlags = []string{
	"id", "data-dir", "grpc-addr", "http-addr", "raft-addr", "initial-cluster", "join",
	"range-max-bytes", "replicas", "locality",
	"cert-file", "key-file", "trusted-ca-file", "client-cert-auth",
	"peer-cert-file", "peer-key-file", "peer-trusted-ca-file",
	"endpoints", "consistency", "max-staleness", "session-token", "explain", "timeout",
	"prefix", "limit", "from", "lease", "keys", "user", "password", "cacert", "cert", "key", "write-out",
	"nodes", "port-base", "tls", "dir",
}

func TestDocs_NameEveryKvdAndKvctlFlag(t *testing.T) {
	readme := readFile(t, filepath.Join(root, "README.md"))
	reference := readme + readFile(t, filepath.Join(root, "docs", "operations.md"))
	defined := map[string]bool{}
	for _, dir := range []string{"cmd/kvd", "cmd/kvctl"} {
		flags := definedFlags(t, filepath.Join(root, dir))
		if len(flags) < 5 {
			t.Fatalf("found only %d flags in %s: the flag parser is broken", len(flags), dir)
		}
		for _, f := range flags {
			defined[f] = true
			if !namesFlag(reference, f) {
				t.Errorf("neither README nor docs/operations.md documents --%s (defined in %s)", f, dir)
			}
		}
	}
	// cobra adds --version itself, so no Flags() call defines it.
	if !namesFlag(readme, "version") {
		t.Error("README does not document --version, a named interface flag")
	}
	for _, f := range readmeFlags {
		if !defined[f] {
			t.Errorf("--%s is a named interface flag, but neither cmd/kvd nor cmd/kvctl defines it", f)
		}
		if !namesFlag(readme, f) {
			t.Errorf("README does not document --%s, a named interface flag", f)
		}
	}
}

func namesFlag(doc, flag string) bool {
	// Not \b: "--cert" must not count as named by "--cert-file".
	return regexp.MustCompile(`--` + regexp.QuoteMeta(flag) + `(?:[^\w-]|$)`).MatchString(doc)
}

func TestDocs_LinksResolve(t *testing.T) {
	linkRe := regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	for _, doc := range markdownFiles(t) {
		for _, m := range linkRe.FindAllStringSubmatch(prose(readFile(t, doc)), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := doc
			if path != "" {
				file = filepath.Join(filepath.Dir(doc), path)
			}
			info, err := os.Stat(file)
			if err != nil {
				t.Errorf("%s links to %s, which does not exist", rel(doc), target)
				continue
			}
			if anchor == "" {
				continue
			}
			if info.IsDir() || !strings.HasSuffix(file, ".md") {
				t.Errorf("%s links to %s: an anchor in something that is not a Markdown file", rel(doc), target)
				continue
			}
			if !slices.Contains(anchors(readFile(t, file)), anchor) {
				t.Errorf("%s links to %s, but %s has no heading with anchor #%s", rel(doc), target, rel(file), anchor)
			}
		}
	}
}

func TestDocs_IndexListsEveryDocument(t *testing.T) {
	indexPath := filepath.Join(root, "docs", "README.md")
	index := readFile(t, indexPath)
	for _, doc := range markdownFiles(t) {
		r, _ := filepath.Rel(filepath.Join(root, "docs"), doc)
		if strings.HasPrefix(r, "..") || r == "README.md" {
			continue
		}
		if !strings.Contains(index, "("+filepath.ToSlash(r)+")") {
			t.Errorf("docs/README.md does not list docs/%s: add a line - [title](%s): what it is", r, filepath.ToSlash(r))
		}
	}
}

// markdownFiles returns README.md and every Markdown file under docs/.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	out := []string{filepath.Join(root, "README.md")}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			out = append(out, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// makeTargets returns the Makefile's explicit targets.
func makeTargets(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	re := regexp.MustCompile(`(?m)^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:([^=]|$)`)
	for _, m := range re.FindAllStringSubmatch(readFile(t, filepath.Join(root, "Makefile")), -1) {
		out[m[1]] = true
	}
	if !out["test"] {
		t.Fatalf("found no target test in the Makefile (%v): the parser is broken", out)
	}
	return out
}

// mentionedTargets returns the targets of every `make ...` command in the
// document's code (inline spans and fenced blocks); prose like "make it
// stand" is not a command.
func mentionedTargets(doc string) []string {
	var out []string
	cmd := regexp.MustCompile(`(?m)(?:^|[\s$])make((?:[ \t]+[A-Za-z_]+=\S*)*)[ \t]+([a-z][a-z0-9-]*)`)
	for _, code := range codeOf(doc) {
		for _, m := range cmd.FindAllStringSubmatch(code, -1) {
			if !slices.Contains(out, m[2]) {
				out = append(out, m[2])
			}
		}
	}
	return out
}

var (
	fenceRe = regexp.MustCompile("(?ms)^```[^\n]*\n(.*?)^```")
	// A code span may wrap onto the next line (Markdown renders the line
	// break as a space), but never across a blank line.
	spanRe = regexp.MustCompile("`([^`\n]+(?:\n[^`\n]+)*)`")
)

// codeOf returns the fenced blocks and inline code spans of doc.
func codeOf(doc string) []string {
	var out []string
	for _, m := range fenceRe.FindAllStringSubmatch(doc, -1) {
		out = append(out, m[1])
	}
	for _, m := range spanRe.FindAllStringSubmatch(fenceRe.ReplaceAllString(doc, ""), -1) {
		out = append(out, strings.ReplaceAll(m[1], "\n", " "))
	}
	return out
}

// prose returns doc without its code, where brackets are not links.
func prose(doc string) string {
	return spanRe.ReplaceAllString(fenceRe.ReplaceAllString(doc, ""), "")
}

// anchors returns the GitHub anchors of doc's headings.
func anchors(doc string) []string {
	var out []string
	seen := map[string]int{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`).FindAllStringSubmatch(fenceRe.ReplaceAllString(doc, ""), -1) {
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		if n := seen[a]; n > 0 {
			out = append(out, a+"-"+strconv.Itoa(n))
		} else {
			out = append(out, a)
		}
		seen[a]++
	}
	return out
}

// definedFlags returns the long names of the flags the non-test Go files
// of dir define through pflag's XxxVar/XxxVarP calls, except those whose
// usage says they are deprecated.
func definedFlags(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	kind := regexp.MustCompile(`^(Bool|Duration|Float64|Int|Int64|String|StringArray|StringSlice|Uint|Uint32|Uint64)VarP?$`)
	var out []string
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 3 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !kind.MatchString(sel.Sel.Name) {
				return true
			}
			flag, ok := stringLit(call.Args[1])
			if !ok {
				return true
			}
			if usage, ok := stringLit(call.Args[len(call.Args)-1]); ok && strings.HasPrefix(usage, "deprecated") {
				return true
			}
			if !slices.Contains(out, flag) {
				out = append(out, flag)
			}
			return true
		})
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func rel(path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
