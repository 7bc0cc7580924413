package jepsen

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Binaries built once by TestMain; buildErr fails every test that needs
// them.
var (
	kvdBin, kvctlBin string
	buildErr         error
)

func TestMain(m *testing.M) {
	// DIALKV_KVD_BIN and DIALKV_KVCTL_BIN test prebuilt binaries instead
	// of building the working tree's.
	if kvd, kvctl := os.Getenv("DIALKV_KVD_BIN"), os.Getenv("DIALKV_KVCTL_BIN"); kvd != "" && kvctl != "" {
		kvdBin, kvctlBin = kvd, kvctl
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "dialkv-jepsen-bin-")
	if err != nil {
		buildErr = err
	} else {
		start := time.Now()
		kvdBin, kvctlBin, buildErr = BuildBinaries(dir)
		fmt.Fprintf(os.Stderr, "jepsen: built kvd and kvctl in %v\n", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// startCluster starts an n-node cluster in t.TempDir(), closes it when the
// test ends, and dumps every node's log tail if the test failed.
func startCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	// Harness events carry the wall-clock time of the node logs, so the
	// two can be read side by side.
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
	}
	c, err := Start(ctx, Options{KvdPath: kvdBin, Dir: dir, Nodes: n, Logf: logf})
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*", "kvd.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("--- %s:\n%s", l, b)
		}
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster of %d ready in %v", n, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 60)
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// ---- kvctl ----

type kvctlResult struct {
	stdout, stderr string
	code           int
}

func (r kvctlResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// kvctl runs bin/kvctl against c's gRPC endpoints with stdin.
func kvctl(t *testing.T, c *Cluster, stdin string, args ...string) kvctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--endpoints", strings.Join(c.GRPCAddrs(), ","), "--timeout", "10s"}, args...)
	cmd := exec.CommandContext(ctx, kvctlBin, full...)
	cmd.Env = append(os.Environ(), "KVCTL_ENDPOINTS=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := kvctlResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.code = ee.ExitCode()
	default:
		t.Fatalf("kvctl %v: %v (stderr %q)", args, err, errb.String())
	}
	return res
}

// mustKvctl runs kvctl and fails the test unless it exits 0.
func mustKvctl(t *testing.T, c *Cluster, args ...string) string {
	t.Helper()
	r := kvctl(t, c, "", args...)
	if r.code != 0 {
		t.Fatalf("kvctl %v: %v", args, r)
	}
	return r.stdout
}

// ---- HTTP ----

type httpResult struct {
	code   int
	header http.Header
	body   []byte
}

// httpDo sends one request with c's client; transport errors are
// returned, not fatal.
func httpDo(ctx context.Context, c *Cluster, method, u string, body []byte) (httpResult, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return httpResult{}, err
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{code: resp.StatusCode, header: resp.Header, body: b}, err
}

func kvURL(c *Cluster, i int, key string, query string) string {
	u := c.URL(i) + "/v1/kv/" + url.PathEscape(key)
	if query != "" {
		u += "?" + query
	}
	return u
}

// write is one put: acknowledged (ok) or not (its fate is unknown).
type write struct {
	key, value string
	ok         bool
	at         time.Time // when the answer arrived
	servedBy   string
	revision   uint64
	status     string // HTTP status or transport error when !ok
}

// putHTTP puts key=value through node i with a server-side timeout.
func putHTTP(ctx context.Context, c *Cluster, i int, key, value string) write {
	w := write{key: key, value: value}
	r, err := httpDo(ctx, c, http.MethodPut, kvURL(c, i, key, "timeout=2s"), []byte(value))
	w.at = time.Now()
	switch {
	case err != nil:
		w.status = err.Error()
	case r.code != http.StatusOK:
		w.status = fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body))
	default:
		w.ok = true
		w.servedBy = r.header.Get("X-Dialkv-Served-By")
		w.revision, _ = strconv.ParseUint(r.header.Get("X-Dialkv-Revision"), 10, 64)
	}
	return w
}

// writeKeys puts count keys fmt.Sprintf(format, k) concurrently through
// every node in turn, retrying a failed put (same key, same value) up to 5
// times, and fails the test if any put is never acknowledged.
func writeKeys(t *testing.T, c *Cluster, format string, count, workers int) []write {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := make([]write, count)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := range jobs {
				key := fmt.Sprintf(format, k)
				value := fmt.Sprintf("%s=%d", key, time.Now().UnixNano())
				for attempt := range 5 {
					out[k] = putHTTP(ctx, c, (w+k+attempt)%c.N(), key, value)
					if out[k].ok || ctx.Err() != nil {
						break
					}
				}
			}
		})
	}
	for k := range count {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	for _, w := range out {
		if !w.ok {
			t.Fatalf("put %s never acknowledged: %s", w.key, w.status)
		}
	}
	return out
}

// verifyReadable reads every acknowledged write back with a linearizable
// GET, spreading the reads over every node, and reports each key that is
// missing or holds another value. A 503 (no leader yet) is retried a few
// times: unavailability is allowed, a wrong answer is not.
func verifyReadable(t *testing.T, c *Cluster, writes []write) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		problems []string
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for k := range jobs {
				w := writes[k]
				if !w.ok {
					continue
				}
				var problem string
				for attempt := range 10 {
					node := (k + attempt) % c.N()
					r, err := httpDo(ctx, c, http.MethodGet, kvURL(c, node, w.key, "consistency=linearizable"), nil)
					switch {
					case err != nil:
						problem = fmt.Sprintf("%s via %s: %v", w.key, c.ID(node), err)
						continue
					case r.code == http.StatusServiceUnavailable || r.code == http.StatusGatewayTimeout:
						problem = fmt.Sprintf("%s via %s: %d %s", w.key, c.ID(node), r.code, bytes.TrimSpace(r.body))
						select {
						case <-ctx.Done():
						case <-time.After(100 * time.Millisecond):
						}
						continue
					case r.code == http.StatusNotFound:
						problem = fmt.Sprintf("LOST %s (acknowledged at revision %d by %s): 404 via %s", w.key, w.revision, w.servedBy, c.ID(node))
					case r.code != http.StatusOK:
						problem = fmt.Sprintf("%s via %s: %d %s", w.key, c.ID(node), r.code, bytes.TrimSpace(r.body))
					case string(r.body) != w.value:
						problem = fmt.Sprintf("WRONG %s via %s: got %q, want %q", w.key, c.ID(node), r.body, w.value)
					default:
						problem = ""
					}
					break
				}
				if problem != "" {
					mu.Lock()
					problems = append(problems, problem)
					mu.Unlock()
				}
			}
		})
	}
	for k := range writes {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Errorf("%d of %d acknowledged writes not read back; first ones:\n%s",
			len(problems), len(writes), strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
}

type scanPage struct {
	KVs []struct {
		Key      string `json:"key"`
		Value    string `json:"value"`
		Revision uint64 `json:"revision"`
	} `json:"kvs"`
	More         bool   `json:"more"`
	NextKey      string `json:"next_key"`
	ServedBy     string `json:"served_by"`
	AppliedIndex uint64 `json:"applied_index"`
}

// scanHTTP returns every key in [start, end) on node i at level, following
// pages (bounded to 1000 pages).
func scanHTTP(t *testing.T, c *Cluster, i int, start, end, level string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]string{}
	for page := 0; page < 1000; page++ {
		q := url.Values{"start": {start}, "end": {end}, "consistency": {level}, "limit": {"1000"}}
		r, err := httpDo(ctx, c, http.MethodGet, c.URL(i)+"/v1/scan?"+q.Encode(), nil)
		if err != nil || r.code != http.StatusOK {
			t.Fatalf("scan %s on %s: %v %d %s", level, c.ID(i), err, r.code, r.body)
		}
		var p scanPage
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("scan: %v: %s", err, r.body)
		}
		for _, kv := range p.KVs {
			out[kv.Key] = kv.Value
		}
		if !p.More {
			return out
		}
		start = p.NextKey
	}
	t.Fatalf("scan on %s: more than 1000 pages", c.ID(i))
	return nil
}

// ---- tests ----

func TestProcess_KvctlAndHTTP(t *testing.T) {
	c := startCluster(t, 3)

	t.Run("kvctl simple", func(t *testing.T) {
		if out := mustKvctl(t, c, "put", "greeting", "hello"); out != "OK\n" {
			t.Errorf("put printed %q, want OK", out)
		}
		if out := mustKvctl(t, c, "get", "greeting"); out != "hello" {
			t.Errorf("get printed %q, want the raw value %q", out, "hello")
		}
		if out := mustKvctl(t, c, "del", "greeting"); out != "1\n" {
			t.Errorf("del of an existing key printed %q, want 1", out)
		}
		if out := mustKvctl(t, c, "del", "greeting"); out != "0\n" {
			t.Errorf("del of a missing key printed %q, want 0", out)
		}
		if r := kvctl(t, c, "", "get", "greeting"); r.code != 4 {
			t.Errorf("get of a missing key: %v, want exit 4", r)
		}
		for _, kv := range [][2]string{{"s/b", "2"}, {"s/a", "1"}, {"s/c", "3 with spaces"}, {"t/x", "outside"}} {
			mustKvctl(t, c, "put", kv[0], kv[1])
		}
		if out, want := mustKvctl(t, c, "scan", "--prefix", "s/"), "s/a\t1\ns/b\t2\ns/c\t3 with spaces\n"; out != want {
			t.Errorf("scan --prefix s/ printed %q, want %q", out, want)
		}
		if out, want := mustKvctl(t, c, "scan", "s/b", "t/"), "s/b\t2\ns/c\t3 with spaces\n"; out != want {
			t.Errorf("scan s/b t/ printed %q, want %q", out, want)
		}
		if out, want := mustKvctl(t, c, "scan", "--prefix", "s/", "--limit", "2"), "s/a\t1\ns/b\t2\n"; out != want {
			t.Errorf("scan --limit 2 printed %q, want %q", out, want)
		}
		// The value from stdin, byte for byte.
		if r := kvctl(t, c, "from\nstdin\n", "put", "stdin-key"); r.code != 0 {
			t.Fatalf("put from stdin: %v", r)
		}
		if out := mustKvctl(t, c, "get", "stdin-key"); out != "from\nstdin\n" {
			t.Errorf("get stdin-key printed %q", out)
		}
	})

	t.Run("kvctl json", func(t *testing.T) {
		var w struct {
			Key          *string `json:"key"`
			Revision     *uint64 `json:"revision"`
			ServedBy     *string `json:"served_by"`
			RangeID      *uint64 `json:"range_id"`
			SessionToken *string `json:"session_token"`
		}
		out := mustKvctl(t, c, "-w", "json", "put", "j/1", "one")
		if err := json.Unmarshal([]byte(out), &w); err != nil {
			t.Fatalf("put -w json printed %q: %v", out, err)
		}
		if w.Revision == nil || *w.Revision == 0 || w.ServedBy == nil || c.Index(*w.ServedBy) < 0 ||
			w.RangeID == nil || *w.RangeID == 0 || w.SessionToken == nil || w.Key == nil || *w.Key != "j/1" {
			t.Errorf("put -w json: missing or insane fields in %s", out)
		}
		var r struct {
			Key          *string `json:"key"`
			Value        *string `json:"value"`
			Revision     *uint64 `json:"revision"`
			ServedBy     *string `json:"served_by"`
			RangeID      *uint64 `json:"range_id"`
			AppliedIndex *uint64 `json:"applied_index"`
			Consistency  *string `json:"consistency"`
		}
		for _, level := range []string{"linearizable", "session", "stale"} {
			args := []string{"-w", "json", "get", "j/1", "--consistency", level}
			if level == "session" {
				args = append(args, "--session-token", *w.SessionToken)
			}
			// A stale read may be served by a replica that has not
			// applied the put yet (exit 4, not found; the level promises
			// no more): ask until one that has answers, as a client of
			// that level would.
			res := kvctl(t, c, "", args...)
			for try := 0; level == "stale" && res.code == 4 && try < 50; try++ {
				time.Sleep(100 * time.Millisecond)
				res = kvctl(t, c, "", args...)
			}
			if res.code != 0 {
				t.Fatalf("kvctl %v: %v", args, res)
			}
			out = res.stdout
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("get -w json printed %q: %v", out, err)
			}
			switch {
			case r.Value == nil || *r.Value != "one" || r.Key == nil || *r.Key != "j/1":
				t.Errorf("get %s -w json: wrong key or value in %s", level, out)
			case r.ServedBy == nil || c.Index(*r.ServedBy) < 0:
				t.Errorf("get %s -w json: served_by is not a node id in %s", level, out)
			case r.RangeID == nil || *r.RangeID != *w.RangeID:
				t.Errorf("get %s -w json: range_id differs from the put's %d in %s", level, *w.RangeID, out)
			case r.Revision == nil || *r.Revision != *w.Revision:
				t.Errorf("get %s -w json: revision differs from the put's %d in %s", level, *w.Revision, out)
			case r.AppliedIndex == nil || *r.AppliedIndex < *r.Revision:
				t.Errorf("get %s -w json: applied_index is below the key's revision in %s", level, out)
			case r.Consistency == nil || *r.Consistency != level:
				t.Errorf("get %s -w json: consistency field in %s", level, out)
			}
		}
		mustKvctl(t, c, "put", "j/2", "two")
		out = mustKvctl(t, c, "-w", "json", "scan", "--prefix", "j/")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 {
			t.Fatalf("scan -w json printed %d lines, want 2: %q", len(lines), out)
		}
		for k, line := range lines {
			r.AppliedIndex, r.ServedBy, r.RangeID = nil, nil, nil
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("scan -w json line %q: %v", line, err)
			}
			if want := fmt.Sprintf("j/%d", k+1); r.Key == nil || *r.Key != want || r.ServedBy == nil ||
				r.RangeID == nil || r.AppliedIndex == nil || *r.AppliedIndex == 0 {
				t.Errorf("scan -w json line %d: want key %s with served_by, range_id, applied_index: %s", k, want, line)
			}
		}
		out = mustKvctl(t, c, "-w", "json", "del", "j/2")
		var d struct {
			Deleted  *bool   `json:"deleted"`
			Revision *uint64 `json:"revision"`
		}
		if err := json.Unmarshal([]byte(out), &d); err != nil || d.Deleted == nil || !*d.Deleted || d.Revision == nil || *d.Revision <= *w.Revision {
			t.Errorf("del -w json printed %q (%v): want deleted true and a revision after the put's", out, err)
		}
	})

	t.Run("kvctl usage errors", func(t *testing.T) {
		if r := kvctl(t, c, "", "get", "j/1", "--consistency", "nonsense"); r.code != 2 || !strings.Contains(r.stderr, "consistency") {
			t.Errorf("get --consistency nonsense: %v, want exit 2 naming the flag", r)
		}
		// kvctl sends the empty key to the server, which refuses it with
		// InvalidArgument: exit 1 (an error, not a usage mistake caught
		// by kvctl itself) and a message that says why.
		r := kvctl(t, c, "", "put", "", "value")
		if (r.code != 1 && r.code != 2) || !strings.Contains(r.stderr, "key must not be empty") {
			t.Errorf("put of an empty key: %v, want exit 1 or 2 with \"key must not be empty\"", r)
		}
		t.Logf("put of an empty key: %v", r)
		for k, v := range scanHTTP(t, c, 0, "", "", "linearizable") {
			if k == "" {
				t.Errorf("an empty key was written (value %q)", v)
			}
		}
		if r := kvctl(t, c, "", "bogus-command"); r.code != 2 {
			t.Errorf("unknown command: %v, want exit 2", r)
		}
	})

	t.Run("HTTP", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := range c.N() {
			key := fmt.Sprintf("h/%d", i)
			r, err := httpDo(ctx, c, http.MethodPut, kvURL(c, i, key, ""), []byte("via "+c.ID(i)))
			if err != nil || r.code != http.StatusOK {
				t.Fatalf("PUT %s via %s: %v %d %s", key, c.ID(i), err, r.code, r.body)
			}
			if c.Index(r.header.Get("X-Dialkv-Served-By")) < 0 || r.header.Get("X-Dialkv-Revision") == "" {
				t.Errorf("PUT via %s: headers %v", c.ID(i), r.header)
			}
			// Read it back through another node.
			j := (i + 1) % c.N()
			r, err = httpDo(ctx, c, http.MethodGet, kvURL(c, j, key, ""), nil)
			if err != nil || r.code != http.StatusOK || string(r.body) != "via "+c.ID(i) {
				t.Fatalf("GET %s via %s: %v %d %q", key, c.ID(j), err, r.code, r.body)
			}
			if sb := r.header.Get("X-Dialkv-Served-By"); c.Index(sb) < 0 {
				t.Errorf("GET via %s: X-Dialkv-Served-By is %q, want a node id", c.ID(j), sb)
			}
			if r.header.Get("X-Dialkv-Applied-Index") == "" || r.header.Get("X-Dialkv-Range") == "" {
				t.Errorf("GET via %s: headers %v", c.ID(j), r.header)
			}
			// A stale read is served locally at once: by this node, with
			// the value or, if this follower has not applied the put
			// yet, without it.
			r, err = httpDo(ctx, c, http.MethodGet, kvURL(c, i, key, "consistency=stale"), nil)
			switch {
			case err != nil:
				t.Errorf("stale GET via %s: %v", c.ID(i), err)
			case r.header.Get("X-Dialkv-Served-By") != c.ID(i):
				t.Errorf("stale GET via %s: served by %q, want the local node", c.ID(i), r.header.Get("X-Dialkv-Served-By"))
			case r.code == http.StatusOK && string(r.body) != "via "+c.ID(i), r.code != http.StatusOK && r.code != http.StatusNotFound:
				t.Errorf("stale GET via %s: %d %q", c.ID(i), r.code, r.body)
			}
		}
		check := func(name string, method, u string, body []byte, want int) {
			t.Helper()
			r, err := httpDo(ctx, c, method, u, body)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.code != want {
				t.Errorf("%s: %d %s, want %d", name, r.code, r.body, want)
			}
		}
		check("GET missing", http.MethodGet, kvURL(c, 0, "h/missing", ""), nil, http.StatusNotFound)
		check("GET ?consistency=nonsense", http.MethodGet, kvURL(c, 0, "h/0", "consistency=nonsense"), nil, http.StatusBadRequest)
		check("PUT 1 MiB+1", http.MethodPut, kvURL(c, 1, "h/big", ""), bytes.Repeat([]byte("x"), 1<<20+1), http.StatusRequestEntityTooLarge)
		check("GET h/big after the refused PUT", http.MethodGet, kvURL(c, 0, "h/big", ""), nil, http.StatusNotFound)
		check("PUT exactly 1 MiB", http.MethodPut, kvURL(c, 2, "h/big", ""), bytes.Repeat([]byte("y"), 1<<20), http.StatusOK)
		r, err := httpDo(ctx, c, http.MethodGet, kvURL(c, 0, "h/big", ""), nil)
		if err != nil || r.code != http.StatusOK || len(r.body) != 1<<20 {
			t.Errorf("GET of the 1 MiB value: %v %d, %d bytes", err, r.code, len(r.body))
		}
		check("DELETE", http.MethodDelete, kvURL(c, 0, "h/big", ""), nil, http.StatusOK)
		check("GET after DELETE", http.MethodGet, kvURL(c, 1, "h/big", ""), nil, http.StatusNotFound)
	})

	t.Run("kvctl import and scan", func(t *testing.T) {
		var in strings.Builder
		want := make([]string, 500)
		for k := range 500 {
			want[k] = fmt.Sprintf("imp/%04d\tvalue %d", k, k*k)
			in.WriteString(want[k] + "\n")
		}
		file := filepath.Join(t.TempDir(), "import.tsv")
		if err := os.WriteFile(file, []byte(in.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out := mustKvctl(t, c, "import", file)
		t.Logf("import of 500 keys: %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		if !strings.Contains(out, "500") {
			t.Errorf("import printed %q, want the count 500", out)
		}
		got := strings.Split(strings.TrimSuffix(mustKvctl(t, c, "scan", "--prefix", "imp/"), "\n"), "\n")
		if !slices.Equal(got, want) {
			t.Errorf("scan after import: %d lines, want 500 in order; first diff at %d", len(got), firstDiff(got, want))
		}
		// The same through stdin.
		if r := kvctl(t, c, "imp2/a\t1\nimp2/b\t2\n", "import", "-"); r.code != 0 {
			t.Fatalf("import -: %v", r)
		}
		if out, want := mustKvctl(t, c, "scan", "--prefix", "imp2/"), "imp2/a\t1\nimp2/b\t2\n"; out != want {
			t.Errorf("scan after import from stdin: %q, want %q", out, want)
		}
		if r := kvctl(t, c, "no tab here\n", "import", "-"); r.code != 2 {
			t.Errorf("import of a line without a tab: %v, want exit 2", r)
		}
	})
}

// failureKind condenses a failed write's status for a summary: the HTTP
// status code, or "transport" for a connection error.
func failureKind(status string) string {
	code, _, _ := strings.Cut(status, " ")
	if _, err := strconv.Atoi(code); err != nil {
		return "transport"
	}
	return "http " + code
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestProcess_LeaderKillLosesNothing SIGKILLs the leader in the middle of a
// stream of writes: writes resume on a new leader, the killed node catches
// up after a restart, and every acknowledged write survives.
func TestProcess_LeaderKillLosesNothing(t *testing.T) {
	c := startCluster(t, 3)
	const (
		killAfter   = 150  // acknowledged writes before the kill
		targetAcks  = 450  // the writer stops after this many acks...
		maxAttempts = 3000 // ...or this many attempts
		writerLimit = 40 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), writerLimit)
	defer cancel()

	var (
		mu      sync.Mutex
		history []write
		codes   = map[string]int{}
	)
	reachedKillPoint := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		target, acks := 0, 0
		for op := 0; op < maxAttempts && acks < targetAcks && ctx.Err() == nil; op++ {
			key := fmt.Sprintf("lk/%06d", op)
			w := putHTTP(ctx, c, target, key, fmt.Sprintf("v%06d@%d", op, time.Now().UnixNano()))
			mu.Lock()
			history = append(history, w)
			if !w.ok {
				codes[failureKind(w.status)]++
			}
			mu.Unlock()
			if w.ok {
				if acks++; acks == killAfter {
					close(reachedKillPoint)
				}
				continue
			}
			// Try the next node; pause a little so a dead node is not
			// hammered while an election runs.
			target = (target + 1) % c.N()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	select {
	case <-reachedKillPoint:
	case <-writerDone:
		t.Fatalf("the writer stopped before %d acknowledged writes", killAfter)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	leader, err := c.Leader(lctx)
	lcancel()
	if err != nil {
		t.Fatalf("find leader: %v", err)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatalf("kill leader: %v", err)
	}
	// The process is reaped: from here on no acknowledgement can come
	// from it, save one already in flight (those carry its id).
	killedAt := time.Now()
	t.Logf("killed leader %s", c.ID(leader))

	lctx, lcancel = context.WithTimeout(context.Background(), 15*time.Second)
	newLeader, err := c.Leader(lctx)
	lcancel()
	if err != nil {
		t.Fatalf("no new leader within 15s of killing %s: %v", c.ID(leader), err)
	}
	if newLeader == leader {
		t.Fatalf("leader is still the killed %s", c.ID(leader))
	}
	t.Logf("new leader %s, seen %v after the kill", c.ID(newLeader), time.Since(killedAt).Round(time.Millisecond))

	<-writerDone
	mu.Lock()
	writes := slices.Clone(history)
	mu.Unlock()

	// The gap: from the last acknowledgement before the kill to the first
	// after it.
	var lastBefore, firstAfter time.Time
	acked, failed := 0, 0
	for _, w := range writes {
		if !w.ok {
			failed++
			continue
		}
		acked++
		switch {
		case w.at.Before(killedAt):
			lastBefore = w.at
		case w.servedBy == c.ID(leader):
			// The old leader's answer to a write it committed just
			// before it died.
		case firstAfter.IsZero():
			firstAfter = w.at
		}
	}
	t.Logf("writer: %d attempts, %d acknowledged, %d failed %v", len(writes), acked, failed, codes)
	if firstAfter.IsZero() {
		t.Fatalf("no write was acknowledged after the leader was killed")
	}
	t.Logf("write gap: %v from the last ack before the kill to the first by a new leader (%v after the killed process was reaped)",
		firstAfter.Sub(lastBefore).Round(time.Millisecond), firstAfter.Sub(killedAt).Round(time.Millisecond))
	if acked < targetAcks {
		t.Errorf("only %d of %d writes acknowledged", acked, targetAcks)
	}

	// Bring the killed node back and wait until it has caught up: its
	// stale (local) read of the last acknowledged key returns it.
	if err := c.Restart(leader); err != nil {
		t.Fatalf("restart %s: %v", c.ID(leader), err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer rcancel()
	if err := c.WaitReady(rctx, leader); err != nil {
		t.Fatalf("restarted %s not ready: %v", c.ID(leader), err)
	}
	var last write
	for _, w := range writes {
		if w.ok {
			last = w
		}
	}
	restarted := time.Now()
	caughtUp := false
	var seen string
	for poll := 0; poll < 400 && rctx.Err() == nil; poll++ {
		r, err := httpDo(rctx, c, http.MethodGet, kvURL(c, leader, last.key, "consistency=stale"), nil)
		if err == nil && r.code == http.StatusOK && string(r.body) == last.value {
			caughtUp = true
			break
		}
		seen = fmt.Sprintf("%v %d %q", err, r.code, r.body)
		select {
		case <-rctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !caughtUp {
		t.Fatalf("restarted %s never served the last acknowledged key %s by stale read (last answer %s)", c.ID(leader), last.key, seen)
	}
	t.Logf("restarted %s caught up %v after it was ready", c.ID(leader), time.Since(restarted).Round(time.Millisecond))

	// One writer, one write at a time: the log holds the acknowledged
	// writes in order, so a replica that has the last one has them all.
	local := scanHTTP(t, c, leader, "lk/", "lk0", "stale")
	for _, w := range writes {
		if w.ok && local[w.key] != w.value {
			t.Errorf("restarted %s has caught up to %s but its local state lacks %s (has %q)", c.ID(leader), last.key, w.key, local[w.key])
		}
	}
	// An unacknowledged write may or may not have happened, but it cannot
	// have a value nobody wrote.
	for _, w := range writes {
		if v, ok := local[w.key]; !w.ok && ok && v != w.value {
			t.Errorf("unacknowledged %s holds %q, want %q or nothing", w.key, v, w.value)
		}
	}
	start := time.Now()
	verifyReadable(t, c, writes)
	t.Logf("read back %d acknowledged writes in %v", acked, time.Since(start).Round(time.Millisecond))
}

// TestProcess_FullRestartKeepsEveryKey stops every node cleanly and
// restarts the cluster, then kills every node with SIGKILL right after a
// burst of acknowledged writes and restarts it again: no acknowledged key
// may be lost either way. The SIGKILL round exercises the state machine's
// replay of the Raft log past its durable applied index.
func TestProcess_FullRestartKeepsEveryKey(t *testing.T) {
	c := startCluster(t, 3)
	restartAll := func(how string) {
		t.Helper()
		start := time.Now()
		for i := range c.N() {
			if err := c.Restart(i); err != nil {
				t.Fatalf("restart %s: %v", c.ID(i), err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.WaitReady(ctx); err != nil {
			t.Fatalf("cluster not ready after %s: %v", how, err)
		}
		t.Logf("cluster ready %v after restarting from %s", time.Since(start).Round(time.Millisecond), how)
	}
	parallel := func(what string, f func(i int) error) {
		t.Helper()
		errs := make([]error, c.N())
		var wg sync.WaitGroup
		for i := range c.N() {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("%s %s: %v", what, c.ID(i), err)
			}
		}
	}

	start := time.Now()
	writes := writeKeys(t, c, "fr/a/%04d", 1000, 8)
	t.Logf("wrote 1000 keys in %v", time.Since(start).Round(time.Millisecond))

	stopStart := time.Now()
	parallel("SIGTERM", c.Stop)
	t.Logf("stopped every node with SIGTERM in %v", time.Since(stopStart).Round(time.Millisecond))
	restartAll("SIGTERM")
	verifyReadable(t, c, writes)
	if t.Failed() {
		t.FailNow()
	}

	burst := writeKeys(t, c, "fr/b/%04d", 300, 8)
	parallel("SIGKILL", c.Kill)
	t.Logf("killed every node with SIGKILL right after a burst of %d acknowledged writes", len(burst))
	restartAll("SIGKILL")
	all := append(slices.Clone(writes), burst...)
	verifyReadable(t, c, all)

	// Every node's local state holds every key once it has caught up
	// (polled: a follower may still be applying).
	for i := range c.N() {
		var local map[string]string
		for poll := 0; poll < 100; poll++ {
			if local = scanHTTP(t, c, i, "fr/", "fr0", "stale"); len(local) >= len(all) {
				break
			}
			<-time.After(50 * time.Millisecond)
		}
		for _, w := range all {
			if local[w.key] != w.value {
				t.Errorf("%s lacks %s after the restarts (has %q)", c.ID(i), w.key, local[w.key])
				break
			}
		}
	}

	// The replicas checker finds the replicas identical, and then finds a
	// replica whose state was changed behind Raft's back.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r := replicaResult(ctx, c, replicaWait{Timeout: 25 * time.Second, Interval: 500 * time.Millisecond}, t.Logf); r.Failing() || r.Checked < 2 {
		t.Fatalf("replicas after the restarts: %s, %d ranges compared, %+v %v", r.Verdict, r.Checked, r.Violations, r.Notes)
	}
	if err := c.Stop(2); err != nil {
		t.Fatal(err)
	}
	tamperFirstValue(t, filepath.Join(c.DataDir(2), "state.db"), 2)
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	r := replicaResult(ctx, c, replicaWait{Timeout: 25 * time.Second, Interval: 500 * time.Millisecond}, t.Logf)
	if !r.Failing() || len(r.Violations) == 0 || !strings.Contains(r.Violations[0].Msg, "range 2:") {
		t.Fatalf("a tampered replica of range 2 went unnoticed: %s %+v %v", r.Verdict, r.Violations, r.Notes)
	}
	t.Logf("replicas checker: %s", r.Violations[0].Msg)
}

// tamperFirstValue changes the value of the first key of range id's
// bucket in a stopped node's state.db (bucket "r" + big-endian id; values
// are an 8-byte revision then the value).
func tamperFirstValue(t *testing.T, path string, id uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(binary.BigEndian.AppendUint64([]byte("r"), id))
		if b == nil {
			return fmt.Errorf("no bucket for range %d", id)
		}
		k, v := b.Cursor().First()
		if k == nil {
			return fmt.Errorf("range %d is empty", id)
		}
		return b.Put(bytes.Clone(k), append(bytes.Clone(v), "-tampered"...))
	})
	if err != nil {
		t.Fatalf("tamper with %s: %v", path, err)
	}
}
