package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
)

// TestConsole_InHeadlessChromium starts a real 3-node cluster (kvd
// cluster), splits it into five user ranges, lets the idle ones sleep and
// keeps one busy, then loads /ui in headless Chromium. The rendered DOM
// must show every node and range `kvctl cluster status` reports, each
// range's leader, and the sleeping ones as asleep. The screenshot is kept
// (its path is logged) and docs/console.png is one of them. With auth
// turned on, the page must show the 401 and ask for a sign-in.
func TestConsole_InHeadlessChromium(t *testing.T) {
	chromium := findChromium(t)
	bins := harness.BuildBinaries(t, t.TempDir(), "github.com/dialkv/dialkv/cmd/kvd", "github.com/dialkv/dialkv/cmd/kvctl")
	kvd, kvctl := bins[0], bins[1]
	base, err := harness.FreePortBase(3, 3)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	// Idle ranges sleep after 2 s, so that the page has sleeping ones.
	harness.StartServer(t, exec.Command(kvd, "cluster", "--nodes", "3", "--data-dir", data, "--port-base", fmt.Sprint(base), "--hibernate-after", "2s"),
		harness.ProcOptions{DeathSignal: syscall.SIGTERM}, filepath.Join(data, "cluster.out"), "is ready", 90*time.Second)
	grpcAddr := func(i int) string { return harness.Addr(harness.MemberPorts(base, i, 3)[0]) }
	httpAddr := func(i int) string { return harness.Addr(harness.MemberPorts(base, i, 3)[1]) }
	all := strings.Join([]string{grpcAddr(1), grpcAddr(2), grpcAddr(3)}, ",")
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, kvctl, args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("kvctl %v: %v\n%s", args, err, ee.Stderr)
			}
			t.Fatalf("kvctl %v: %v", args, err)
		}
		return out
	}

	for _, k := range []string{"b", "c", "m", "user/"} {
		run("--endpoints", all, "--timeout", "20s", "range", "split", k)
	}
	for _, k := range []string{"apple", "banana", "cherry", "melon"} {
		run("--endpoints", all, "put", k, "fruit")
	}
	harness.Eventually(t, "an idle range sleeps on n1", 60*time.Second, func() bool {
		for _, r := range nodeStatus(t, run, grpcAddr(1))[0].Ranges {
			if r.State == "Hibernating" {
				return true
			}
		}
		return false
	})

	// Traffic on the user/ range keeps it awake and gives the rate panels
	// something to count, through n1 only.
	c, err := client.New(client.Config{Endpoints: []string{grpcAddr(1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	trafficCtx, stopTraffic := context.WithTimeout(context.Background(), 3*time.Minute)
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for i := 0; i < 100000 && trafficCtx.Err() == nil; i++ {
			key := []byte(fmt.Sprintf("user/%04d", i%200))
			ctx, cancel := context.WithTimeout(trafficCtx, 5*time.Second)
			c.Put(ctx, key, []byte(fmt.Sprintf("value %d", i)))
			c.Get(ctx, key)
			c.Get(ctx, key, client.WithConsistency(kvpb.Consistency_CONSISTENCY_STALE))
			c.Get(ctx, key, client.WithConsistency(kvpb.Consistency_CONSISTENCY_BOUNDED), client.WithMaxStaleness(time.Second))
			cancel()
		}
	}()
	endTraffic := func() {
		stopTraffic()
		<-trafficDone
	}
	defer endTraffic()

	url := "http://" + httpAddr(1) + "/ui"
	t.Run("the DOM shows what kvctl reports", func(t *testing.T) {
		// Leadership or sleep may change while the page renders: compare
		// only when kvctl says the same before and after, in a few tries.
		for attempt := 1; ; attempt++ {
			before := expected(t, run, all, grpcAddr(1))
			dom := runChromium(t, chromium, "--dump-dom", url)
			after := expected(t, run, all, grpcAddr(1))
			if !before.equal(after) && attempt < 4 {
				t.Logf("attempt %d: the cluster changed while the page rendered (%v -> %v); again", attempt, before, after)
				continue
			}
			checkDOM(t, string(dom), before, after)
			return
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "dialkv-console-")
		if err != nil {
			t.Fatal(err)
		}
		shot := filepath.Join(dir, "console.png")
		runChromium(t, chromium, "--screenshot="+shot, url)
		f, err := os.Open(shot)
		if err != nil {
			t.Fatalf("chromium wrote no screenshot: %v", err)
		}
		defer f.Close()
		cfg, err := png.DecodeConfig(f)
		if err != nil || cfg.Width != 1400 || cfg.Height != 900 {
			t.Fatalf("screenshot %s: %dx%d, %v; want a 1400x900 PNG", shot, cfg.Width, cfg.Height, err)
		}
		t.Logf("console screenshot (kept): %s", shot)
	})

	t.Run("auth on without a token shows the 401", func(t *testing.T) {
		endTraffic() // its requests would all be refused from now on
		run("--endpoints", all, "user", "add", "root", "--password", "rootpw")
		run("--endpoints", all, "user", "grant-role", "root", "root")
		run("--endpoints", all, "auth", "enable")
		var dom string
		harness.Eventually(t, "n1 refuses the console's requests", 30*time.Second, func() bool {
			dom = string(runChromium(t, chromium, "--dump-dom", url))
			return strings.Contains(dom, "401 UNAUTHENTICATED")
		})
		banner := regexp.MustCompile(`<section id="auth"[^>]*>`).FindString(dom)
		if banner == "" || strings.Contains(banner, "hidden") {
			t.Errorf("the sign-in section is %q; want it shown", banner)
		}
		if !strings.Contains(dom, "Auth is on") || !strings.Contains(dom, `id="auth-form"`) {
			t.Errorf("the page does not ask for a sign-in:\n%s", dom)
		}
		if rows := domRows(dom, "data-node"); len(rows) != 0 {
			t.Errorf("the page lists nodes %v although every request was refused", rows)
		}
	})
}

// findChromium fails the test, saying how to install it, when Debian's
// chromium is missing: a skipped browser test would pass unseen.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is needed for the console test and is not installed: " +
		"apt-get update && apt-get install -y chromium (.ci/run does this in CI)")
	return ""
}

// runChromium runs headless Chromium on a page with a virtual time budget,
// so that the page's scripts have fetched and rendered twice (it refreshes
// every 2 s), and returns its stdout.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	base := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir(), "--window-size=1400,900", "--virtual-time-budget=5000", "--hide-scrollbars"}
	cmd := exec.Command(bin, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	p, err := harness.Start(cmd, harness.ProcOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.WaitFor(2 * time.Minute) {
		err := p.Kill()
		t.Fatalf("chromium %v did not finish in 2m (%v); stderr:\n%s", args, err, stderr.String())
	}
	if _, err := p.Exited(); err != nil {
		t.Fatalf("chromium %v: %v; stderr:\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// view is what the page must show: node ids, and per range its leader
// and whether it sleeps on the node serving the page.
type view struct {
	nodes   []string
	leaders map[string]string
	asleep  map[string]bool
}

func (v view) equal(o view) bool {
	return slices.Equal(v.nodes, o.nodes) && fmt.Sprint(v.leaders) == fmt.Sprint(o.leaders) && fmt.Sprint(v.asleep) == fmt.Sprint(o.asleep)
}

func (v view) String() string { return fmt.Sprintf("leaders %v asleep %v", v.leaders, v.asleep) }

type statusJSON struct {
	ID     string `json:"id"`
	Ranges []struct {
		ID     uint64 `json:"id"`
		State  string `json:"state"`
		Leader string `json:"leader"`
	} `json:"ranges"`
}

// nodeStatus is `kvctl cluster status -w json` against endpoints.
func nodeStatus(t *testing.T, run func(...string) []byte, endpoints string) []statusJSON {
	t.Helper()
	var out []statusJSON
	dec := json.NewDecoder(bytes.NewReader(run("--endpoints", endpoints, "-w", "json", "cluster", "status")))
	for {
		var s statusJSON
		if err := dec.Decode(&s); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("kvctl cluster status -w json: %v", err)
		}
		out = append(out, s)
	}
}

// expected is the view kvctl gives: the nodes answering cluster status,
// n1's ranges with the leader its Raft knows, or for a sleeping range
// (whose Raft is stopped) the routing table's leader, as range list says.
func expected(t *testing.T, run func(...string) []byte, all, n1 string) view {
	t.Helper()
	v := view{leaders: map[string]string{}, asleep: map[string]bool{}}
	for _, s := range nodeStatus(t, run, all) {
		v.nodes = append(v.nodes, s.ID)
	}
	slices.Sort(v.nodes)
	var table struct {
		Ranges []struct {
			ID     uint64 `json:"id"`
			Leader string `json:"leader"`
		} `json:"ranges"`
	}
	if err := json.Unmarshal(run("--endpoints", all, "-w", "json", "range", "list"), &table); err != nil {
		t.Fatalf("kvctl range list -w json: %v", err)
	}
	hint := map[string]string{}
	for _, r := range table.Ranges {
		hint[fmt.Sprint(r.ID)] = r.Leader
	}
	for _, r := range nodeStatus(t, run, n1)[0].Ranges {
		id := fmt.Sprint(r.ID)
		v.leaders[id] = r.Leader
		if r.Leader == "" {
			v.leaders[id] = hint[id]
		}
		v.asleep[id] = r.State == "Hibernating"
	}
	return v
}

// domRows maps the attr value of every <tr attr="..."> row of the DOM to
// the row's attributes and inner HTML.
func domRows(dom, attr string) map[string]string {
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<tr\b([^>]*)>(.*?)</tr>`).FindAllStringSubmatch(dom, -1) {
		if v := regexp.MustCompile(attr + `="([^"]*)"`).FindStringSubmatch(m[1]); v != nil {
			out[v[1]] = m[0]
		}
	}
	return out
}

func checkDOM(t *testing.T, dom string, before, after view) {
	t.Helper()
	nodes := domRows(dom, "data-node")
	if len(before.nodes) != 3 {
		t.Fatalf("kvctl cluster status reports nodes %v; want 3", before.nodes)
	}
	for _, id := range before.nodes {
		if nodes[id] == "" {
			t.Errorf("the page has no row for node %s (rows: %v)", id, keys(nodes))
		}
	}
	ranges := domRows(dom, "data-range")
	if len(before.leaders) < 6 {
		t.Fatalf("kvctl cluster status reports ranges %v; want the meta range and 5 user ranges", before.leaders)
	}
	for id, leader := range before.leaders {
		row := ranges[id]
		if row == "" {
			t.Errorf("the page has no row for range %s (rows: %v)", id, keys(ranges))
			continue
		}
		if !strings.Contains(row, `data-leader="`+leader+`"`) || leader == "" {
			t.Errorf("range %s: row %s; want leader %q as kvctl reports", id, row, leader)
		}
		if before.asleep[id] && after.asleep[id] && !strings.Contains(row, "asleep") {
			t.Errorf("range %s sleeps on n1 but its row does not say so: %s", id, row)
		}
		if !before.asleep[id] && !after.asleep[id] && strings.Contains(row, "asleep") {
			t.Errorf("range %s is awake on n1 but its row says asleep: %s", id, row)
		}
	}
	if n := len(ranges); n != len(before.leaders) {
		t.Errorf("the page has %d range rows (%v); kvctl reports %d ranges", n, keys(ranges), len(before.leaders))
	}
	// The rate panel drew from /metrics: the console's own Status calls.
	if !strings.Contains(dom, `data-method="Status"`) {
		t.Errorf("the request rate table has no Status row: /metrics was not drawn")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
