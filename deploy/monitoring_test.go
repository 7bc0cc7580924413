package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	jepsen "github.com/dialkv/dialkv/jepsen-style-tests"
)

// What Grafana would put for its interval variables on a dashboard
// scraped every second: a rate needs at least two samples in its window.
const (
	scrapeInterval = "1s"
	rateInterval   = "10s"
	stepInterval   = "5s"
)

// The shipped files, relative to this package's directory (go test's
// working directory).
const (
	dashboardFile  = "grafana/dialkv.json"
	configFile     = "prometheus/prometheus.yml"
	alertsFile     = "prometheus/alerts.yml"
	alertTestsFile = "prometheus/alerts_test.yml"
)

// prometheusStarts bounds the attempts to start Prometheus on a picked
// port: another process may take the port first (see harness.FreePorts).
const prometheusStarts = 3

// tools finds prometheus and promtool on PATH, or fails the test saying how
// to install them: CI installs them (.ci/run), so a missing one is an
// error, not a reason to skip.
func tools(t *testing.T) (prometheus, promtool string) {
	t.Helper()
	var paths []string
	for _, name := range []string{"prometheus", "promtool"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s is not on PATH (%v): this test runs Debian's Prometheus. Install it with "+
				"`sudo apt-get install -y --no-install-recommends prometheus` (Debian 12 has 2.42; .ci/run does this in CI), "+
				"then stop the service it may start: `sudo systemctl disable --now prometheus`", name, err)
		}
		paths = append(paths, p)
	}
	return paths[0], paths[1]
}

// promtool runs promtool with args in dir and returns its output; a
// non-zero exit fails the test.
func promtool(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// alertNames are the alerts alerts.yml defines, in file order.
func alertNames(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)\s*$`).FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("%s defines no alert", alertsFile)
	}
	return names
}

// promtool accepts the rules and the config, and the rules' unit tests
// pass; and those tests hold every alert to both sides of its promise: at
// least one case where it fires and one where it must not.
func TestAlertRules_PromtoolChecksAndUnitTests(t *testing.T) {
	_, bin := tools(t)
	names := alertNames(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"check rules", []string{"check", "rules", filepath.Base(alertsFile)}, fmt.Sprintf("SUCCESS: %d rules found", len(names))},
		{"check config", []string{"check", "config", filepath.Base(configFile)}, "is valid prometheus config file"},
		{"test rules", []string{"test", "rules", filepath.Base(alertTestsFile)}, "SUCCESS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := promtool(t, bin, filepath.Dir(alertsFile), tt.args...)
			if !strings.Contains(out, tt.want) {
				t.Fatalf("promtool %s says:\n%s\nwant it to say %q", strings.Join(tt.args, " "), out, tt.want)
			}
		})
	}
	b, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		q := regexp.QuoteMeta(name)
		fires := regexp.MustCompile(`alertname: ` + q + `\s*\n\s*exp_alerts:\s*\n\s*- exp_labels:`)
		quiet := regexp.MustCompile(`alertname: ` + q + `\s*\n\s*exp_alerts: \[\]`)
		if !fires.Match(b) {
			t.Errorf("%s has no case where %s fires", alertTestsFile, name)
		}
		if !quiet.Match(b) {
			t.Errorf("%s has no case where %s stays quiet", alertTestsFile, name)
		}
	}
}

// Debian's Prometheus, configured by the shipped prometheus.yml and
// alerts.yml, scrapes a real 3-node cluster under a little of every kind
// of load; every query of the shipped dashboard and every alert
// expression returns data from it, the alerts stay quiet while it is
// healthy, and killing a node raises DialkvNodeDown for that node.
func TestMonitoring_DashboardAndAlertsOnARealCluster(t *testing.T) {
	promBin, promtoolBin := tools(t)
	dir := t.TempDir()
	start := time.Now()
	kvd, _, err := jepsen.BuildBinaries(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built kvd in %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := jepsen.Start(ctx, jepsen.Options{KvdPath: kvd, Dir: filepath.Join(dir, "cluster"), Nodes: 3, Logf: t.Logf})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 30)
		}
		if err := c.Close(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})

	generateLoad(ctx, t, c)

	prom := startPrometheus(ctx, t, promBin, promtoolBin, c.HTTPAddrs(), filepath.Join(dir, "prometheus"))
	prom.waitTargetsUp(ctx, t, c.HTTPAddrs())

	t.Run("dashboard", func(t *testing.T) { checkDashboard(ctx, t, prom) })
	t.Run("load shows", func(t *testing.T) { checkLoadShows(ctx, t, prom) })
	t.Run("alerts", func(t *testing.T) { checkAlertExpressions(ctx, t, prom) })
	if t.Failed() {
		return
	}
	t.Run("killed node", func(t *testing.T) {
		down := c.HTTPAddrs()[2]
		if err := c.Kill(2); err != nil {
			t.Fatal(err)
		}
		// up == 0 makes DialkvNodeDown pending at the first evaluation
		// after the failed scrape, firing 30 s later: pending is enough
		// to show the rule sees the kill.
		var got []string
		err := harness.Poll(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
			alerts, err := prom.alerts(ctx)
			if err != nil {
				return false, err
			}
			got = got[:0]
			for _, a := range alerts {
				if a.Labels["alertname"] == "DialkvNodeDown" {
					got = append(got, a.Labels["instance"]+" "+a.State)
				}
			}
			return len(got) > 0, nil
		})
		if err != nil {
			t.Fatalf("no DialkvNodeDown after killing the node at %s: %v", down, err)
		}
		if len(got) != 1 || !strings.HasPrefix(got[0], down+" ") {
			t.Fatalf("DialkvNodeDown for %v, want it for %s only", got, down)
		}
		t.Logf("DialkvNodeDown: %s", got[0])
	})
}

// generateLoad puts keys, reads them at every level, scans, has a bounded
// read refused, grants a lease with a key and opens a watch that stays
// open until the test ends, so that every series the dashboard shows
// exists.
func generateLoad(ctx context.Context, t *testing.T, c *jepsen.Cluster) {
	t.Helper()
	hc := c.HTTPClient()
	do := func(method, u string, body string, hdr http.Header) (*http.Response, []byte) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, method, u, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		return resp, b
	}
	must := func(resp *http.Response, b []byte, what string) {
		t.Helper()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s: %s", what, resp.Status, b)
		}
	}

	// A watch on every key the load writes, held open through the scrapes
	// (dialkv_watch_streams); with its own client, whose timeout would
	// cut the stream.
	wctx, wcancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(wctx, http.MethodGet, c.URL(1)+"/v1/watch?prefix=load/", nil)
	if err != nil {
		t.Fatal(err)
	}
	wresp, err := (&http.Client{}).Do(req)
	if err != nil {
		wcancel()
		t.Fatalf("open watch: %v", err)
	}
	if wresp.StatusCode != http.StatusOK {
		wcancel()
		t.Fatalf("open watch: %s", wresp.Status)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, wresp.Body)
	}()
	t.Cleanup(func() {
		wcancel()
		wresp.Body.Close()
		<-drained
	})

	var session string
	for i := range 30 {
		resp, b := do(http.MethodPut, fmt.Sprintf("%s/v1/kv/load/%02d", c.URL(i%3), i), "value "+strconv.Itoa(i), nil)
		must(resp, b, "put")
		session = resp.Header.Get("X-Dialkv-Session")
	}
	resp, b := do(http.MethodPost, c.URL(0)+"/v1/lease/grant", `{"ttl": 600}`, nil)
	must(resp, b, "lease grant")
	var grant struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &grant); err != nil || grant.ID == "" {
		t.Fatalf("lease grant answered %s (%v)", b, err)
	}
	resp, b = do(http.MethodPut, c.URL(0)+"/v1/kv/load/leased?lease="+grant.ID, "kept while the lease lives", nil)
	must(resp, b, "put with a lease")

	levels := []struct {
		query string
		hdr   http.Header
	}{
		{"consistency=linearizable", nil},
		{"consistency=bounded&max_staleness=10s", nil},
		{"consistency=session", http.Header{"X-Dialkv-Session": {session}}},
		{"consistency=stale", nil},
	}
	for i := range 3 {
		for _, l := range levels {
			resp, b := do(http.MethodGet, c.URL(i)+"/v1/kv/load/00?"+l.query, "", l.hdr)
			must(resp, b, "get "+l.query)
			resp, b = do(http.MethodGet, c.URL(i)+"/v1/scan?prefix=load/&"+l.query, "", l.hdr)
			must(resp, b, "scan "+l.query)
		}
	}
	// A bound of 1 ns is tighter than any follower can show, even right
	// after asking its leader (which takes microseconds at best): it
	// refuses the read.
	refused := false
	for i := 0; i < 30 && !refused; i++ {
		resp, _ := do(http.MethodGet, c.URL(i%3)+"/v1/kv/load/00?consistency=bounded&max_staleness=1ns", "", nil)
		refused = resp.Header.Get("X-Dialkv-Reason") == "STALE_REPLICA"
	}
	if !refused {
		t.Fatal("no node refused a bounded read with max_staleness=1ns in 30 tries")
	}
}

// prometheus is a Prometheus server the test started.
type prometheus struct {
	base string // http://127.0.0.1:port
	hc   *http.Client
}

// startPrometheus runs Prometheus on the shipped prometheus.yml, with the
// cluster's HTTP addresses as targets and every interval at 1 s, the
// shipped alerts.yml next to it, in dir; it is stopped by PID when the
// test ends.
func startPrometheus(ctx context.Context, t *testing.T, bin, promtoolBin string, targets []string, dir string) *prometheus {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(shipped)
	swaps := []struct{ old, new string }{
		{"scrape_interval: 15s", "scrape_interval: " + scrapeInterval},
		{"evaluation_interval: 15s", "evaluation_interval: " + scrapeInterval},
	}
	for i, addr := range targets {
		swaps = append(swaps, struct{ old, new string }{fmt.Sprintf("- 127.0.0.1:70%d1", i+1), "- " + addr})
	}
	for _, s := range swaps {
		if n := strings.Count(cfg, s.old); n != 1 {
			t.Fatalf("%s holds %q %d times, want once: the test rewrites it for its cluster", configFile, s.old, n)
		}
		cfg = strings.Replace(cfg, s.old, s.new, 1)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, promtoolBin, dir, "check", "config", "prometheus.yml")

	var last error
	for attempt := 1; attempt <= prometheusStarts; attempt++ {
		p, err := runPrometheus(ctx, t, bin, cfgPath, filepath.Join(dir, fmt.Sprintf("run%d", attempt)))
		if err == nil {
			return p
		}
		last = err
		t.Logf("prometheus, attempt %d: %v", attempt, err)
	}
	t.Fatalf("prometheus did not start in %d attempts: %v", prometheusStarts, last)
	return nil
}

// runPrometheus starts one Prometheus on a free port and waits until it is
// ready; an error when it exits first (its port was taken, say) or is not
// ready within 30 s.
func runPrometheus(ctx context.Context, t *testing.T, bin, cfgPath, dir string) (*prometheus, error) {
	t.Helper()
	ports, err := harness.FreePorts(1)
	if err != nil {
		return nil, err
	}
	addr := harness.Addr(ports[0])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := harness.Start(cmd, harness.ProcOptions{})
	if err != nil {
		return nil, err
	}
	p := &prometheus{base: "http://" + addr, hc: &http.Client{Timeout: 5 * time.Second}}
	err = harness.Poll(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, _ := proc.Exited(); done {
			return false, errors.New("prometheus exited")
		}
		code, _, err := p.get(ctx, "/-/ready", nil)
		return err == nil && code == http.StatusOK, nil
	})
	if err != nil {
		proc.Stop(10 * time.Second)
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("prometheus on %s (pid %d): %w\n%s", addr, proc.PID(), err, log)
	}
	t.Logf("prometheus pid %d on %s, log %s", proc.PID(), addr, logPath)
	t.Cleanup(func() {
		if err := proc.Stop(10 * time.Second); err != nil {
			t.Errorf("stop prometheus: %v", err)
		}
	})
	return p, nil
}

func (p *prometheus) get(ctx context.Context, path string, q url.Values) (int, []byte, error) {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// api calls one of Prometheus' /api/v1 endpoints and decodes its data; an
// answer that is not "success" is an error carrying Prometheus' message.
func (p *prometheus) api(ctx context.Context, path string, q url.Values, data any) error {
	_, b, err := p.get(ctx, "/api/v1/"+path, q)
	if err != nil {
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.ErrorType, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// sample is one series of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) float() float64 {
	v, _ := s.Value[1].(string)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0
	}
	return f
}

// query evaluates expr now; only instant vectors are expected.
func (p *prometheus) query(ctx context.Context, expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(ctx, "query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("%s is a %s, want an instant vector", expr, data.ResultType)
	}
	var out []sample
	return out, json.Unmarshal(data.Result, &out)
}

type alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *prometheus) alerts(ctx context.Context) ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	err := p.api(ctx, "alerts", nil, &data)
	return data.Alerts, err
}

// waitTargetsUp waits until Prometheus has scraped every node: each one a
// target of job dialkv, and up.
func (p *prometheus) waitTargetsUp(ctx context.Context, t *testing.T, addrs []string) {
	t.Helper()
	var states []string
	err := harness.Poll(ctx, time.Minute, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := p.api(ctx, "targets", url.Values{"state": {"active"}}, &data); err != nil {
			return false, err
		}
		states = states[:0]
		up := 0
		for _, tg := range data.ActiveTargets {
			states = append(states, fmt.Sprintf("%s job=%s %s %s", tg.Labels["instance"], tg.Labels["job"], tg.Health, tg.LastError))
			if tg.Labels["job"] == "dialkv" && tg.Health == "up" && slices.Contains(addrs, tg.Labels["instance"]) {
				up++
			}
		}
		return up == len(addrs) && len(data.ActiveTargets) == len(addrs), nil
	})
	if err != nil {
		t.Fatalf("targets %v not all up: %v; targets: %v", addrs, err, states)
	}
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Inputs        []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Definition string          `json:"definition"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string          `json:"title"`
	Type       string          `json:"type"`
	Datasource json.RawMessage `json:"datasource"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// promDatasource is how every panel and variable names its data source:
// the DS_PROMETHEUS input Grafana asks for on import.
const promDatasource = `{"type":"prometheus","uid":"${DS_PROMETHEUS}"}`

func sameJSON(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// labelValuesRe reads a query variable's label_values(selector, label).
var labelValuesRe = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// checkDashboard resolves the dashboard's variables against Prometheus as
// Grafana would (every value of a multi-value variable, as a regex) and
// evaluates every panel's every query, waiting until all return data.
func checkDashboard(ctx context.Context, t *testing.T, p *prometheus) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d: older than Grafana 11's", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want the one Prometheus data source DS_PROMETHEUS", d.Inputs)
	}

	// Variables in order: a later one's query may use an earlier one.
	vars := []string{"$__rate_interval", rateInterval, "$__interval", stepInterval}
	for _, v := range d.Templating.List {
		if !sameJSON(v.Datasource, promDatasource) {
			t.Errorf("variable %s: data source %s, want %s", v.Name, v.Datasource, promDatasource)
		}
		m := labelValuesRe.FindStringSubmatch(v.Definition)
		if v.Type != "query" || m == nil {
			t.Fatalf("variable %s (%s, %q): the test resolves only label_values(selector, label) queries", v.Name, v.Type, v.Definition)
		}
		selector := strings.NewReplacer(vars...).Replace(m[1])
		var series []map[string]string
		if err := p.api(ctx, "series", url.Values{"match[]": {selector}}, &series); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		values := map[string]bool{}
		for _, s := range series {
			if s[m[2]] != "" {
				values[s[m[2]]] = true
			}
		}
		if len(values) == 0 {
			t.Fatalf("variable %s: label_values(%s, %s) has no values", v.Name, selector, m[2])
		}
		// As Grafana interpolates a multi-value variable into a PromQL
		// regex: each value escaped, and each escape doubled for the
		// double-quoted string it lands in.
		quoted := make([]string, 0, len(values))
		for val := range values {
			quoted = append(quoted, strings.ReplaceAll(regexp.QuoteMeta(val), `\`, `\\`))
		}
		sort.Strings(quoted)
		re := "(" + strings.Join(quoted, "|") + ")"
		t.Logf("$%s = %s", v.Name, re)
		vars = append(vars, "${"+v.Name+"}", re, "$"+v.Name, re)
	}
	resolve := strings.NewReplacer(vars...)

	type query struct{ where, expr string }
	var queries []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, pn := range ps {
			walk(pn.Panels)
			if pn.Type == "row" {
				continue
			}
			if !sameJSON(pn.Datasource, promDatasource) {
				t.Errorf("panel %q: data source %s, want %s", pn.Title, pn.Datasource, promDatasource)
			}
			if len(pn.Targets) == 0 {
				t.Errorf("panel %q has no query", pn.Title)
			}
			for _, tg := range pn.Targets {
				expr := resolve.Replace(tg.Expr)
				if strings.Contains(expr, "$") {
					t.Errorf("panel %q query %s: %s keeps an unresolved variable", pn.Title, tg.RefID, expr)
				}
				queries = append(queries, query{fmt.Sprintf("panel %q query %s", pn.Title, tg.RefID), expr})
			}
		}
	}
	walk(d.Panels)
	if t.Failed() {
		return
	}

	// A rate needs two scrapes inside its window: wait for all of them.
	empty := map[string]string{}
	err = harness.Poll(ctx, time.Minute, time.Second, func(ctx context.Context) (bool, error) {
		clear(empty)
		for _, q := range queries {
			res, err := p.query(ctx, q.expr)
			if err != nil {
				return false, fmt.Errorf("%s: %w", q.where, err)
			}
			if len(res) == 0 {
				empty[q.where] = q.expr
			}
		}
		return len(empty) == 0, nil
	})
	if err != nil {
		for where, expr := range empty {
			t.Errorf("%s returns no data: %s", where, expr)
		}
		t.Fatalf("dashboard queries: %v", err)
	}
	t.Logf("all %d queries of %d panels return data", len(queries), countPanels(d.Panels))
}

func countPanels(ps []panel) int {
	n := 0
	for _, p := range ps {
		n += countPanels(p.Panels)
		if p.Type != "row" {
			n++
		}
	}
	return n
}

// checkLoadShows asks for what the load must have left behind, so that a
// metric that exists but does not count is caught too.
func checkLoadShows(ctx context.Context, t *testing.T, p *prometheus) {
	tests := []struct {
		what, expr string
		atLeast    float64
	}{
		{"the open watch", `sum(dialkv_watch_streams{job="dialkv"})`, 1},
		{"the live lease", `max(dialkv_leases{job="dialkv"})`, 1},
		{"the refused bounded read", `sum(dialkv_bounded_reads_refused_total{job="dialkv"})`, 1},
		{"reads at all four levels", `count(sum by (level) (dialkv_reads_total{job="dialkv"}))`, 4},
		{"read latency at all four levels", `count(sum by (level) (dialkv_read_duration_seconds_count{job="dialkv"}))`, 4},
		{"three replicas of every range", `min(count by (range) (dialkv_range_asleep{job="dialkv"}))`, 3},
		{"group-commit fsyncs timed", `sum(dialkv_wal_fsync_duration_seconds_count{job="dialkv"})`, 1},
		{"a data disk", `min(dialkv_disk_size_bytes{job="dialkv"})`, 1},
	}
	for _, tt := range tests {
		res, err := p.query(ctx, tt.expr)
		if err != nil {
			t.Errorf("%s: %v", tt.what, err)
			continue
		}
		if len(res) != 1 || res[0].float() < tt.atLeast {
			t.Errorf("%s: %s = %v, want one value of at least %v", tt.what, tt.expr, res, tt.atLeast)
		}
	}
}

// selectorRe finds the metric selectors of an expression: up and every
// dialkv_ metric, with their label matchers.
var selectorRe = regexp.MustCompile(`\b(up|dialkv_[a-z0-9_]+)(\{[^}]*\})?`)

// quietWhenHealthy are the alerts whose expressions must be empty on the
// test's healthy cluster. The disk and fsync alerts depend on the machine
// the test runs on, so only their evaluation is checked.
var quietWhenHealthy = []string{"DialkvNodeDown", "DialkvRangeWithoutLeader", "DialkvReplicaLagging"}

// checkAlertExpressions reads the rules Prometheus loaded from alerts.yml:
// every alert is there, evaluates without error, every metric it selects
// has data, and the structural ones are quiet on a healthy cluster.
func checkAlertExpressions(ctx context.Context, t *testing.T, p *prometheus) {
	want := alertNames(t)
	type rule struct {
		Name, Query, Health, LastError, Type string
		LastEvaluation                       time.Time
	}
	var rules []rule
	err := harness.Poll(ctx, 30*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, error) {
		var data struct {
			Groups []struct {
				Rules []rule `json:"rules"`
			} `json:"groups"`
		}
		if err := p.api(ctx, "rules", url.Values{"type": {"alert"}}, &data); err != nil {
			return false, err
		}
		rules = rules[:0]
		for _, g := range data.Groups {
			rules = append(rules, g.Rules...)
		}
		for _, r := range rules {
			if r.LastEvaluation.IsZero() {
				return false, nil
			}
		}
		return len(rules) > 0, nil
	})
	if err != nil {
		t.Fatalf("alert rules not evaluated: %v (%+v)", err, rules)
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.Name)
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
		res, err := p.query(ctx, r.Query)
		if err != nil {
			t.Errorf("rule %s: %v", r.Name, err)
			continue
		}
		if slices.Contains(quietWhenHealthy, r.Name) && len(res) > 0 {
			t.Errorf("rule %s: %s is %v on a healthy cluster, want nothing", r.Name, r.Query, res)
		}
		selectors := selectorRe.FindAllString(r.Query, -1)
		if len(selectors) == 0 {
			t.Errorf("rule %s selects no metric: %s", r.Name, r.Query)
		}
		for _, sel := range selectors {
			res, err := p.query(ctx, sel)
			if err != nil {
				t.Errorf("rule %s: %s: %v", r.Name, sel, err)
			} else if len(res) == 0 {
				t.Errorf("rule %s: %s has no data", r.Name, sel)
			}
		}
		t.Logf("rule %s: evaluates (%d series now), its %d selectors have data", r.Name, len(res), len(selectors))
	}
	if !slices.Equal(got, want) {
		t.Errorf("Prometheus loaded alerts %v, want %v (alerts.yml)", got, want)
	}
	t.Logf("%d alert expressions checked: %s", len(rules), strings.Join(got, ", "))
}
