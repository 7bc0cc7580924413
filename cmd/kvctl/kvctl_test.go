package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

type result struct {
	code           int
	stdout, stderr string
}

type invocation struct {
	stdin                string
	stdoutTTY, stderrTTY bool
	env                  map[string]string
}

// kvctl runs the command tree in-process.
func kvctl(t *testing.T, inv invocation, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &env{
		stdin:     strings.NewReader(inv.stdin),
		stdout:    &stdout,
		stderr:    &stderr,
		stdoutTTY: inv.stdoutTTY,
		stderrTTY: inv.stderrTTY,
		getenv:    func(k string) string { return inv.env[k] },
	})
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("kvctl %s -> %d\nstdout: %q\nstderr: %q", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// at prepends --endpoints for srv.
func at(addr string, args ...string) []string {
	return append([]string{"--endpoints", addr}, args...)
}

func mustRun(t *testing.T, inv invocation, args ...string) string {
	t.Helper()
	r := kvctl(t, inv, args...)
	if r.code != 0 {
		t.Fatalf("kvctl %v: exit %d, stderr %q", args, r.code, r.stderr)
	}
	return r.stdout
}

func decodeLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

func TestKvctl_ExitCodes(t *testing.T) {
	// Arguments say {ep} for the fake server of the case and {closed} for
	// an address that refuses connections.
	tests := []struct {
		name   string
		script func(*clienttest.Server)
		args   []string
		want   int
	}{
		{"put", nil, at("{ep}", "put", "a", "1"), exitOK},
		{"help", nil, []string{"--help"}, exitOK},
		{"no command prints help", nil, []string{}, exitOK},
		{"group without subcommand prints help", nil, []string{"member"}, exitOK},
		{"completion", nil, []string{"completion", "bash"}, exitOK},
		{"server rejects the input", nil, at("{ep}", "put", "", "1"), exitUsage},
		{"missing file to import", nil, at("{ep}", "import", filepath.Join(t.TempDir(), "nope")), exitError},
		{"get of a missing key", nil, at("{ep}", "get", "missing"), exitNotFound},
		{"remove of an unknown member", nil, at("{ep}", "member", "remove", "n9"), exitNotFound},
		{"node remove of an unknown node", nil, at("{ep}", "node", "remove", "n9"), exitNotFound},
		{"node remove without an id", nil, at("{ep}", "node", "remove"), exitUsage},
		{"node list", nil, at("{ep}", "node", "list"), exitOK},
		{"range list", nil, at("{ep}", "range", "list"), exitOK},
		{"range split", nil, at("{ep}", "range", "split", "k"), exitOK},
		{"range split at a range start", nil, at("{ep}", "range", "split", "m"), exitUsage},
		{"range split of an empty key", nil, at("{ep}", "range", "split", ""), exitUsage},
		{"range split without a key", nil, at("{ep}", "range", "split"), exitUsage},
		{"range list unavailable", func(srv *clienttest.Server) { srv.Fail(clienttest.MethodRanges, 100, clienttest.NotLeader("")) }, at("{ep}", "--timeout", "1s", "range", "list"), exitUnavailable},
		{"split outcome unknown", func(srv *clienttest.Server) { srv.Fail(clienttest.MethodSplitRange, 1, clienttest.Indeterminate()) }, at("{ep}", "range", "split", "k"), exitUnavailable},
		{"unknown range subcommand", nil, []string{"range", "merge"}, exitUsage},
		{"compare failed", nil, at("{ep}", "cas", "k", "new", "--expect", "other"), exitCompareFailed},
		{"expect missing on an existing key", nil, at("{ep}", "cas", "k", "new", "--expect-missing"), exitCompareFailed},
		{"no endpoint accepts connections", nil, at("{closed}", "--timeout", "1s", "get", "k"), exitUnavailable},
		{"no leader", func(srv *clienttest.Server) { srv.Fail(clienttest.MethodGet, 100, clienttest.NotLeader("")) }, at("{ep}", "--timeout", "1s", "get", "k"), exitUnavailable},
		{"cas outcome unknown", func(srv *clienttest.Server) { srv.Fail(clienttest.MethodCAS, 1, clienttest.Indeterminate()) }, at("{ep}", "cas", "k", "w", "--expect", "v"), exitUnavailable},
		{"put timed out", func(srv *clienttest.Server) {
			srv.Fail(clienttest.MethodPut, 1, rpctypes.Error(codes.DeadlineExceeded, rpctypes.ReasonIndeterminate, "apply timed out", nil))
		}, at("{ep}", "put", "k", "v"), exitUnavailable},
		{"cluster status with nothing reachable", nil, at("{closed}", "--timeout", "1s", "cluster", "status"), exitUnavailable},
		{"unknown consistency", nil, at("{ep}", "get", "k", "--consistency", "strong"), exitUsage},
		{"bounded without max staleness", nil, at("{ep}", "get", "k", "--consistency", "bounded"), exitUsage},
		{"max staleness without bounded", nil, at("{ep}", "scan", "--max-staleness", "1s"), exitUsage},
		{"unknown flag", nil, at("{ep}", "get", "k", "--bogus"), exitUsage},
		{"missing argument", nil, at("{ep}", "get"), exitUsage},
		{"negative limit", nil, at("{ep}", "scan", "--limit", "-1"), exitUsage},
		{"too many arguments", nil, at("{ep}", "del", "a", "b"), exitUsage},
		{"unknown command", nil, []string{"frobnicate"}, exitUsage},
		{"unknown subcommand", nil, []string{"member", "frobnicate"}, exitUsage},
		{"unknown output format", nil, at("{ep}", "-w", "yaml", "get", "k"), exitUsage},
		{"cas without expectation", nil, at("{ep}", "cas", "k", "v"), exitUsage},
		{"cas with both expectations", nil, at("{ep}", "cas", "k", "v", "--expect", "a", "--expect-missing"), exitUsage},
		{"prefix with a start key", nil, at("{ep}", "scan", "--prefix", "a", "b"), exitUsage},
		{"malformed endpoint", nil, at("localhost", "get", "k"), exitUsage},
		{"bad duration", nil, at("{ep}", "--timeout", "soon", "get", "k"), exitUsage},
		{"zero concurrency", nil, at("{ep}", "import", "--concurrency", "0"), exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			srv.Store.Put([]byte("k"), []byte("v"))
			srv.Store.SetNodes(srv.Node())
			srv.Store.SetRanges(
				&kvpb.RangeDescriptor{Id: 1, End: []byte("m"), Replicas: []string{"n1"}, Leader: "n1"},
				&kvpb.RangeDescriptor{Id: 2, Start: []byte("m"), Replicas: []string{"n1"}, Leader: "n1"},
			)
			if tt.script != nil {
				tt.script(srv)
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				a = strings.ReplaceAll(a, "{ep}", srv.Addr)
				args[i] = strings.ReplaceAll(a, "{closed}", clienttest.ClosedAddr(t))
			}
			r := kvctl(t, invocation{}, args...)
			if r.code != tt.want {
				t.Fatalf("exit %d, want %d (stderr %q)", r.code, tt.want, r.stderr)
			}
			if tt.want != exitOK {
				if !strings.HasPrefix(r.stderr, "Error: ") {
					t.Fatalf("stderr %q does not start with \"Error: \"", r.stderr)
				}
				if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines > 0 {
					t.Fatalf("stderr %q is not one line", r.stderr)
				}
			}
		})
	}
}

func TestKvctl_GetPrintsTheRawValue(t *testing.T) {
	srv := clienttest.Start(t)
	value := "line\n\x00\xff"
	srv.Store.Put([]byte("bin"), []byte(value))

	if got := mustRun(t, invocation{}, at(srv.Addr, "get", "bin")...); got != value {
		t.Fatalf("get to a pipe printed %q, want exactly %q", got, value)
	}
	if got := mustRun(t, invocation{stdoutTTY: true}, at(srv.Addr, "get", "bin")...); got != value+"\n" {
		t.Fatalf("get to a terminal printed %q, want %q", got, value+"\n")
	}
}

func TestKvctl_PutThenGetRoundTrips(t *testing.T) {
	srv := clienttest.Start(t)
	if got := mustRun(t, invocation{}, at(srv.Addr, "put", "a", "1")...); got != "OK\n" {
		t.Fatalf("put printed %q, want OK", got)
	}
	mustRun(t, invocation{stdin: "from\nstdin\n"}, at(srv.Addr, "put", "b")...)
	if v, _ := srv.Store.Value([]byte("b")); string(v) != "from\nstdin\n" {
		t.Fatalf("value read from stdin = %q", v)
	}
	if got := mustRun(t, invocation{}, at(srv.Addr, "del", "a")...); got != "1\n" {
		t.Fatalf("del of an existing key printed %q, want 1", got)
	}
	if got := mustRun(t, invocation{}, at(srv.Addr, "del", "a")...); got != "0\n" {
		t.Fatalf("del of a missing key printed %q, want 0", got)
	}
	mustRun(t, invocation{}, at(srv.Addr, "cas", "c", "1", "--expect-missing")...)
	mustRun(t, invocation{}, at(srv.Addr, "cas", "c", "2", "--expect", "1")...)
	if v, _ := srv.Store.Value([]byte("c")); string(v) != "2" {
		t.Fatalf("after two cas, c = %q, want 2", v)
	}
}

func TestKvctl_ScanPrintsKeyTabValueAcrossPages(t *testing.T) {
	srv := clienttest.Start(t, clienttest.WithPageSize(2))
	for _, k := range []string{"a1", "a2", "a3", "a4", "a5", "b1", "c1"} {
		srv.Store.Put([]byte(k), []byte("v-"+k))
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"all", []string{"scan"}, "a1\tv-a1\na2\tv-a2\na3\tv-a3\na4\tv-a4\na5\tv-a5\nb1\tv-b1\nc1\tv-c1\n"},
		{"prefix", []string{"scan", "--prefix", "a"}, "a1\tv-a1\na2\tv-a2\na3\tv-a3\na4\tv-a4\na5\tv-a5\n"},
		{"limit across pages", []string{"scan", "--limit", "3"}, "a1\tv-a1\na2\tv-a2\na3\tv-a3\n"},
		{"start and end", []string{"scan", "a4", "c"}, "a4\tv-a4\na5\tv-a5\nb1\tv-b1\n"},
		{"start only", []string{"scan", "b"}, "b1\tv-b1\nc1\tv-c1\n"},
		{"empty result", []string{"scan", "--prefix", "z"}, ""},
		{"stale read", []string{"scan", "--prefix", "b", "--consistency", "STALE"}, "b1\tv-b1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustRun(t, invocation{}, at(srv.Addr, tt.args...)...); got != tt.want {
				t.Fatalf("stdout %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKvctl_JSONOutput(t *testing.T) {
	srv := clienttest.Start(t, clienttest.WithID("n2"), clienttest.WithPageSize(1))
	binary := []byte{0xff, 0x00, 'x'}
	srv.Store.Put([]byte("text"), []byte("héllo <&>"))
	srv.Store.Put([]byte("bin"), binary)

	get := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "get", "text", "--consistency", "session", "--session-token", "s1")...))
	if len(get) != 1 {
		t.Fatalf("get printed %d objects, want 1", len(get))
	}
	for field, want := range map[string]any{
		"key": "text", "value": "héllo <&>", "revision": 1.0, "served_by": "n2", "range_id": 1.0,
		"applied_index": 2.0, "consistency": "session", "staleness_ms": 0.0, "session_token": "s2",
	} {
		if got, ok := get[0][field]; !ok || got != want {
			t.Errorf("get field %s = %v, want %v", field, got, want)
		}
	}

	bin := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "get", "bin")...))[0]
	obj, ok := bin["value"].(map[string]any)
	if !ok || obj["base64"] != base64.StdEncoding.EncodeToString(binary) {
		t.Fatalf("binary value rendered as %v, want {\"base64\": ...}", bin["value"])
	}

	put := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "put", "new", "v")...))[0]
	for _, field := range []string{"key", "revision", "served_by", "range_id", "session_token"} {
		if _, ok := put[field]; !ok {
			t.Errorf("put output lacks %s: %v", field, put)
		}
	}
	if put["revision"] != 3.0 {
		t.Errorf("put revision = %v, want 3", put["revision"])
	}

	del := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "del", "new")...))[0]
	if del["deleted"] != true {
		t.Errorf("del output %v, want deleted true", del)
	}

	scan := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "scan")...))
	if len(scan) != 2 || scan[0]["key"] != "bin" || scan[1]["key"] != "text" || scan[1]["served_by"] != "n2" {
		t.Fatalf("scan printed %v, want one object per key", scan)
	}
	if _, ok := scan[0]["value"].(map[string]any); !ok {
		t.Fatalf("binary value in scan rendered as %v", scan[0]["value"])
	}
}

func TestKvctl_TableOutput(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Store.Put([]byte("k"), []byte("tab\there"))
	out := mustRun(t, invocation{}, at(srv.Addr, "-w", "table", "get", "k")...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "KEY ") {
		t.Fatalf("table %q, want a header and one row", out)
	}
	if !strings.Contains(lines[1], `"tab\there"`) {
		t.Fatalf("row %q should show the tab quoted", lines[1])
	}
	if i, j := strings.Index(lines[0], "REVISION"), strings.Index(lines[1], "1 "); i != j {
		t.Fatalf("columns not aligned:\n%s", out)
	}
}

func TestKvctl_ImportFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "key%03d\tvalue\t%d\r\n", i, i)
	}
	b.WriteString("\nlast\tno newline")
	good := write("good.tsv", b.String())

	srv := clienttest.Start(t)
	out := mustRun(t, invocation{}, at(srv.Addr, "import", "--concurrency", "8", good)...)
	if !regexp.MustCompile(`^imported 201 keys in \S+ \(\d+ keys/s\)\n$`).MatchString(out) {
		t.Fatalf("summary %q", out)
	}
	if got := srv.Store.Len(); got != 201 {
		t.Fatalf("%d keys stored, want 201", got)
	}
	if v, _ := srv.Store.Value([]byte("key007")); string(v) != "value\t7\r" {
		t.Fatalf("key007 = %q, want the rest of the line byte for byte", v)
	}

	t.Run("progress bar only on a terminal", func(t *testing.T) {
		srv := clienttest.Start(t)
		r := kvctl(t, invocation{stderrTTY: true}, at(srv.Addr, "import", good)...)
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "imported 201 keys") || r.stderr == "" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want a summary and a bar on stderr", r.code, r.stdout, r.stderr)
		}
		r = kvctl(t, invocation{stdin: "a\t1\n", stderrTTY: true}, at(srv.Addr, "import")...)
		if r.code != exitOK || r.stderr == "" {
			t.Fatalf("exit %d, stderr %q; want a spinner for stdin", r.code, r.stderr)
		}
	})

	t.Run("malformed file writes nothing", func(t *testing.T) {
		srv := clienttest.Start(t)
		bad := write("bad.tsv", "a\t1\nb\t2\nno tab here\nc\t3\n")
		r := kvctl(t, invocation{}, at(srv.Addr, "import", bad)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "line 3") {
			t.Fatalf("exit %d, stderr %q; want usage error naming line 3", r.code, r.stderr)
		}
		if got := srv.Store.Len(); got != 0 {
			t.Fatalf("%d keys written from a malformed file, want 0", got)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		srv := clienttest.Start(t)
		out := mustRun(t, invocation{stdin: "x\t1\ny\t2\n"}, at(srv.Addr, "-w", "json", "import")...)
		if m := decodeLines(t, out)[0]; m["imported"] != 2.0 {
			t.Fatalf("json summary %v, want imported 2", m)
		}
	})

	t.Run("malformed stdin stops at the line", func(t *testing.T) {
		srv := clienttest.Start(t)
		r := kvctl(t, invocation{stdin: "x\t1\n\tempty key\ny\t2\n"}, at(srv.Addr, "import", "-")...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "line 2: empty key") {
			t.Fatalf("exit %d, stderr %q; want usage error naming line 2", r.code, r.stderr)
		}
		if _, ok := srv.Store.Value([]byte("y")); ok {
			t.Fatalf("a line after the malformed one was written")
		}
	})

	t.Run("an indeterminate put is re-sent", func(t *testing.T) {
		srv := clienttest.Start(t)
		srv.Fail(clienttest.MethodPut, 1, clienttest.Indeterminate())
		r := kvctl(t, invocation{}, at(srv.Addr, "import", "--concurrency", "1", good)...)
		if r.code != exitOK {
			t.Fatalf("exit %d, stderr %q; want the put re-sent and the import done", r.code, r.stderr)
		}
	})

	t.Run("put failure is reported with its line", func(t *testing.T) {
		srv := clienttest.Start(t)
		srv.Fail(clienttest.MethodPut, 100, clienttest.Indeterminate())
		r := kvctl(t, invocation{}, at(srv.Addr, "import", "--concurrency", "1", good)...)
		if r.code != exitUnavailable || !strings.Contains(r.stderr, "line 1 ") {
			t.Fatalf("exit %d, stderr %q; want unavailable naming line 1", r.code, r.stderr)
		}
	})
}

func TestKvctl_EndpointsFromEnvironment(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Store.Put([]byte("k"), []byte("v"))
	closed := clienttest.ClosedAddr(t)
	inv := invocation{env: map[string]string{"KVCTL_ENDPOINTS": closed + "," + srv.Addr}}
	if got := mustRun(t, inv, "get", "k"); got != "v" {
		t.Fatalf("get via KVCTL_ENDPOINTS printed %q", got)
	}
	// The flag wins over the environment.
	inv.env["KVCTL_ENDPOINTS"] = closed
	if got := mustRun(t, inv, at(srv.Addr, "get", "k")...); got != "v" {
		t.Fatalf("get via --endpoints printed %q", got)
	}
}

func TestKvctl_ClusterStatus(t *testing.T) {
	st := clienttest.NewStore()
	n1 := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	n2 := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	st.SetNodes(n1.Node(), n2.Node(), &kvpb.NodeInfo{Id: "n3", State: clienttest.StateRemoved})
	st.SetRanges(
		&kvpb.RangeDescriptor{Id: 1, End: []byte("g"), Replicas: []string{"n1", "n2"}, Leader: "n1"},
		&kvpb.RangeDescriptor{Id: 2, Start: []byte("g"), End: []byte("p"), Replicas: []string{"n1", "n2"}, Leader: "n2"},
		&kvpb.RangeDescriptor{Id: 3, Start: []byte("p"), Replicas: []string{"n1"}, Leader: "n1"},
	)
	st.Put([]byte("k"), []byte("v"))
	closed := clienttest.ClosedAddr(t)
	eps := strings.Join([]string{n1.Addr, n2.Addr, closed}, ",")

	for _, format := range []string{"simple", "table"} {
		t.Run(format, func(t *testing.T) {
			r := kvctl(t, invocation{}, "--endpoints", eps, "--timeout", "2s", "-w", format, "cluster", "status")
			if r.code != exitOK {
				t.Fatalf("exit %d with two reachable endpoints, stderr %q", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			// n1 hosts three ranges, n2 two, and the closed endpoint has a row.
			if len(lines) != 8 {
				t.Fatalf("status printed %q, want a header, six rows and a summary", r.stdout)
			}
			if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NODE GRPC RANGE STATE TERM COMMIT APPLIED LAG LEADER" {
				t.Fatalf("header %q", lines[0])
			}
			var rows []string
			for _, line := range lines[1:6] {
				f := strings.Fields(line)
				rows = append(rows, strings.Join([]string{f[0], f[2], f[3], f[7], f[8]}, " "))
			}
			want := []string{
				"n1 1 Leader 0 n1", "n1 2 Follower 1 n2", "n1 3 Leader 0 n1",
				"n2 1 Follower 1 n1", "n2 2 Leader 0 n2",
			}
			if strings.Join(rows, "; ") != strings.Join(want, "; ") {
				t.Fatalf("rows (NODE RANGE STATE LAG LEADER) %q, want %q", rows, want)
			}
			if got := strings.Fields(lines[6]); got[1] != closed || got[3] != "unreachable" {
				t.Fatalf("row %q, want the closed endpoint unreachable", lines[6])
			}
			if want := "2 nodes, 3 ranges, leaders per node: n1=2 n2=1"; lines[7] != want {
				t.Fatalf("summary %q, want %q", lines[7], want)
			}
			if !strings.Contains(r.stderr, closed) {
				t.Fatalf("stderr %q does not explain the unreachable endpoint", r.stderr)
			}
		})
	}

	objs := decodeLines(t, mustRun(t, invocation{}, "--endpoints", eps, "--timeout", "2s", "-w", "json", "cluster", "status"))
	if len(objs) != 3 || objs[0]["id"] != "n1" || objs[2]["reachable"] != false {
		t.Fatalf("json status %v", objs)
	}
	if rs, _ := objs[0]["ranges"].([]any); len(rs) != 3 {
		t.Fatalf("json status of n1 lists %d ranges, want 3", len(rs))
	}

	t.Run("summary needs the routing table", func(t *testing.T) {
		n1.Fail(clienttest.MethodRanges, 100, rpctypes.Error(codes.Internal, rpctypes.ReasonInternal, "boom", nil))
		r := kvctl(t, invocation{}, "--endpoints", n1.Addr, "cluster", "status")
		if r.code != exitOK || strings.Contains(r.stdout, "nodes,") || !strings.Contains(r.stderr, "no summary") {
			t.Fatalf("exit %d, stdout %q, stderr %q: want the rows, no summary and a warning", r.code, r.stdout, r.stderr)
		}
	})
}

func TestKvctl_Members(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Store.SetNodes(&kvpb.NodeInfo{Id: "n1", RaftAddr: "127.0.0.1:7012", GrpcAddr: "127.0.0.1:7010", HttpAddr: "127.0.0.1:7011"})
	srv.Store.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n1"}, Leader: "n1"})
	out := mustRun(t, invocation{}, at(srv.Addr, "member", "add", "n2", "127.0.0.1:7022")...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID RAFT GRPC HTTP VOTER LEADER" {
		t.Fatalf("member add printed %q", out)
	}
	if got := strings.Fields(lines[2]); got[0] != "n2" || got[4] != "yes" || got[5] != "no" {
		t.Fatalf("row %q, want n2 active and not leading", lines[2])
	}
	// --nonvoter is still accepted, with a notice on stderr only.
	r := kvctl(t, invocation{}, at(srv.Addr, "-w", "json", "member", "add", "n2", "127.0.0.1:7022", "--nonvoter")...)
	if r.code != exitOK || !strings.Contains(r.stderr, "--nonvoter is ignored") {
		t.Fatalf("member add --nonvoter: exit %d, stderr %q", r.code, r.stderr)
	}
	decodeLines(t, r.stdout)
	objs := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "member", "list")...))
	if len(objs) != 2 || objs[0]["leader"] != true || objs[1]["voter"] != true || objs[1]["leader"] != false {
		t.Fatalf("json members %v", objs)
	}
	out = mustRun(t, invocation{}, at(srv.Addr, "member", "remove", "n2")...)
	if got := srv.Calls(clienttest.MethodRemoveMember); got != 1 {
		t.Fatalf("RemoveMember called %d times", got)
	}
	if lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); len(lines) != 3 || strings.Fields(lines[2])[4] != "no" {
		t.Fatalf("member remove printed %q, want n2 no longer a voter", out)
	}
}
