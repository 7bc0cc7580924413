package jepsen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/connlimit"
)

// One client used to be able to take every descriptor of a node with idle
// or half-sent connections to its client ports, until the node could
// neither accept nor dial on its Raft port and lost its leadership (issue
// 12, bug 3). These constants size a flood that does that to an unbounded
// node: every node runs with a descriptor limit of floodNoFile, and the
// flood opens floodPerKind connections of each kind, together four times
// the limit.
const (
	floodNoFile   = 1024
	floodCap      = 200 // --max-client-conns
	floodPerKind  = 1000
	floodTimeouts = 10 * time.Second // --http-idle-timeout, --http-read-timeout, --grpc-idle-timeout
	// floodTraffic is how long the other clients run while the flood is
	// held, and floodP99 the latency their operations must stay under: a
	// correctness bound (no election, no stall), not a benchmark.
	floodTraffic = 3 * time.Second
	floodP99     = 500 * time.Millisecond
	// floodDrain bounds how long after it was opened the server may hold a
	// flood connection: the timeouts, gRPC's 5 s wait for a ping after its
	// idle GOAWAY, and slack for a loaded machine.
	floodDrain = floodTimeouts + 15*time.Second
)

// floodKinds are the ways a client holds a connection without work: what
// it sends after connecting, and to which port.
var floodKinds = []struct {
	name, port string
	hello      string
}{
	// A finished request, then an idle keep-alive connection.
	{"idle keep-alive HTTP", "http", "GET /healthz HTTP/1.1\r\nHost: flood\r\n\r\n"},
	// Headers that never end.
	{"slow-header HTTP", "http", "PUT /v1/kv/flood HTTP/1.1\r\nHost: flood\r\n"},
	// A body that never arrives.
	{"slow-body HTTP", "http", "PUT /v1/kv/flood HTTP/1.1\r\nHost: flood\r\nContent-Length: 1000000\r\n\r\nx"},
	// The HTTP/2 preface and an empty SETTINGS frame: an idle gRPC client.
	{"idle gRPC", "grpc", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"},
}

// floodConn is one connection of the flood.
type floodConn struct {
	kind   int
	conn   net.Conn
	opened time.Time
	status int // idle keep-alive HTTP: the answer to its request
	err    error
}

// TestProcess_ClientConnectionFloodLeavesRaftAlone floods a range leader's
// client ports with four times its descriptor limit in idle and half-sent
// connections, past a cap of 200 per port, and checks that no range holds
// an election, that other clients' puts and gets all succeed with a p99
// under 500 ms, that the node keeps its descriptor reserve, and that the
// server itself closes every held connection once its timeouts pass.
func TestProcess_ClientConnectionFloodLeavesRaftAlone(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	c := startFloodCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The flood goes to the leader of the range that takes the writes.
	before := waitLeadersBalanced(t, c)
	target, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var others []int
	for i := range c.N() {
		if i != target {
			others = append(others, i)
		}
	}
	t.Logf("flooding %s; ranges before: %v", c.ID(target), before)

	// Clients that were connected to the target before the flood: one
	// HTTP connection and one gRPC connection. The flood may not starve
	// them, though no new connection to the target gets in past the cap.
	pinned := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 5 * time.Second}
	defer pinned.CloseIdleConnections()
	base := c.URL(target)
	if _, err := metricsVia(ctx, pinned, base); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(c.GRPCAddrs()[target], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	kv := kvpb.NewKVClient(cc)
	if _, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte("flood-warmup"), Value: []byte("v")}); err != nil {
		t.Fatalf("gRPC put before the flood: %v", err)
	}

	flood := openFlood(t, c, target)
	defer func() {
		for _, f := range flood {
			if f.conn != nil {
				f.conn.Close()
			}
		}
	}()
	admittedIdle, refusedIdle := 0, 0
	for _, f := range flood {
		if f.err != nil {
			t.Fatalf("%s connection: %v", floodKinds[f.kind].name, f.err)
		}
		if f.kind == 0 && f.status == http.StatusOK {
			admittedIdle++
		}
		if f.kind == 0 && f.status == http.StatusServiceUnavailable {
			refusedIdle++
		}
	}
	if admittedIdle > floodCap {
		t.Errorf("%d idle HTTP connections were served, cap %d", admittedIdle, floodCap)
	}
	// Refusals that find a free refusal slot answer; the rest are closed.
	if refusedIdle == 0 {
		t.Errorf("no refused HTTP request got its 503")
	}

	// Every connection of the flood has been admitted or refused once the
	// refusals add up: the HTTP port holds the pinned connection and at
	// most floodCap-1 of the flood's, the gRPC port likewise.
	httpKinds := 3 * floodPerKind
	m := waitMetrics(t, ctx, pinned, base, func(m map[string]float64) bool {
		return m[`refused{port="http"}`] >= float64(httpKinds-floodCap) && m[`refused{port="grpc"}`] >= float64(floodPerKind-floodCap)
	})
	t.Logf("%s during the flood: open http %v grpc %v (cap %v), refused http %v grpc %v; of %d idle HTTP requests %d served, %d answered 503",
		c.ID(target), m[`open{port="http"}`], m[`open{port="grpc"}`], m[`max{port="http"}`],
		m[`refused{port="http"}`], m[`refused{port="grpc"}`], floodPerKind, admittedIdle, refusedIdle)
	for _, port := range []string{"http", "grpc"} {
		if open := m[`open{port="`+port+`"}`]; open > floodCap {
			t.Errorf("%s port holds %v client connections, cap %d", port, open, floodCap)
		}
	}
	if fds, err := openFDs(c.PID(target)); err != nil {
		t.Errorf("counting %s's descriptors: %v", c.ID(target), err)
	} else {
		t.Logf("%s holds %d of its %d descriptors", c.ID(target), fds, floodNoFile)
		if fds > floodNoFile-connlimit.MinReserve {
			t.Errorf("%s holds %d descriptors: clients ate into the %d kept for Raft and disk", c.ID(target), fds, connlimit.MinReserve)
		}
	}

	// Other clients keep being served, within normal latency: through
	// the other nodes (writes forwarded to the target) and through the
	// target's connections from before the flood.
	lat, failures := otherClients(ctx, c, others, pinned, base, kv)
	slices.Sort(lat)
	if len(lat) < 20 {
		t.Errorf("only %d operations in %v", len(lat), floodTraffic)
	} else {
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("%d operations during the flood: p50 %v p99 %v max %v", len(lat), p50, p99, lat[len(lat)-1])
		if p99 > floodP99 {
			t.Errorf("p99 %v during the flood, want under %v", p99, floodP99)
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d operations failed during the flood; first ones: %v", len(failures), failures[:min(5, len(failures))])
	}
	if during := rangeLeadership(t, ctx, c, pinned, target); !during.equal(before) {
		t.Errorf("leadership changed during the flood:\nbefore %v\nduring %v", before, during)
	}

	// The server, not the client, ends every held connection: idle and
	// half-sent ones by the timeouts, refused ones at once.
	drainStart := time.Now()
	stillOpen := drainFlood(flood)
	t.Logf("the server closed the flood's connections %v after the traffic", time.Since(drainStart).Round(100*time.Millisecond))
	for kind, n := range stillOpen {
		if n > 0 {
			t.Errorf("%d %s connections still open %v after they were opened", n, floodKinds[kind].name, floodDrain)
		}
	}
	if after := rangeLeadership(t, ctx, c, pinned, target); !after.equal(before) {
		t.Errorf("leadership changed:\nbefore %v\nafter  %v", before, after)
	}
	for i := range c.N() {
		if tail, _ := c.LogTail(i, 2000); strings.Contains(tail, "too many open files") {
			t.Errorf("%s ran out of descriptors:\n%s", c.ID(i), grepLines(tail, "too many open files", 5))
		}
	}
}

// startFloodCluster starts 3 nodes with floodNoFile descriptors each and
// the flood's caps and timeouts. Ranges never hibernate, so that terms
// change only by elections.
func startFloodCluster(t *testing.T) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	timeouts := floodTimeouts.String()
	c, err := Start(ctx, Options{
		KvdPath: kvdBin, Dir: dir, Nodes: 3, MaxOpenFiles: floodNoFile,
		ExtraArgs: []string{
			"--max-client-conns", strconv.Itoa(floodCap),
			"--http-idle-timeout", timeouts, "--http-read-timeout", timeouts, "--grpc-idle-timeout", timeouts,
			"--hibernate-after", "0",
		},
		Logf: func(format string, args ...any) {
			t.Helper()
			t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
		},
	})
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*", "kvd.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("--- %s:\n%s", l, b)
		}
		t.Fatalf("start cluster: %v", err)
	}
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

// openFlood opens floodPerKind connections of every kind to node target,
// kinds interleaved, 16 at a time. Each idle keep-alive connection reads
// the answer to its request (200 when admitted, 503 when refused).
func openFlood(t *testing.T, c *Cluster, target int) []*floodConn {
	t.Helper()
	addr := map[string]string{"http": c.HTTPAddrs()[target], "grpc": c.GRPCAddrs()[target]}
	flood := make([]*floodConn, len(floodKinds)*floodPerKind)
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				f := &floodConn{kind: i % len(floodKinds)}
				flood[i] = f
				k := floodKinds[f.kind]
				f.conn, f.err = net.DialTimeout("tcp", addr[k.port], 5*time.Second)
				if f.err != nil {
					continue
				}
				f.opened = time.Now()
				f.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(f.conn, k.hello) // an error is a refusal that came first: the drain sees the connection closed
				f.conn.SetWriteDeadline(time.Time{})
			}
		})
	}
	for i := range flood {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("opened %d connections to %s in %v", len(flood), c.ID(target), time.Since(start).Round(time.Millisecond))

	// The answers come in parallel: a server that is out of descriptors
	// leaves its connections in the listen queue, unanswered.
	answers := time.Now().Add(5 * time.Second)
	for _, f := range flood {
		if f.kind != 0 || f.conn == nil {
			continue
		}
		wg.Go(func() {
			f.conn.SetReadDeadline(answers)
			if resp, err := http.ReadResponse(bufio.NewReader(f.conn), nil); err == nil {
				f.status = resp.StatusCode
			}
			f.conn.SetReadDeadline(time.Time{})
		})
	}
	wg.Wait()
	return flood
}

// drainFlood reads every flood connection until the server closes it, at
// most until floodDrain after it was opened, and counts, by kind, those the
// server still held then.
func drainFlood(flood []*floodConn) []int {
	stillOpen := make([]int, len(floodKinds))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range flood {
		if f.conn == nil {
			continue
		}
		wg.Go(func() {
			f.conn.SetReadDeadline(f.opened.Add(floodDrain))
			_, err := io.Copy(io.Discard, f.conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				stillOpen[f.kind]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return stillOpen
}

// otherClients runs the other clients for floodTraffic: two workers per
// other node over new HTTP connections, one over the pinned HTTP
// connection to the target and one over the target's gRPC connection. Each
// operation is a put and a (linearizable) get of the value put.
func otherClients(ctx context.Context, c *Cluster, others []int, pinned *http.Client, targetURL string, kv kvpb.KVClient) (lat []time.Duration, failures []string) {
	type worker struct {
		name string
		op   func(ctx context.Context, key, value string) error
	}
	viaHTTP := func(client *http.Client, base string) func(context.Context, string, string) error {
		return func(ctx context.Context, key, value string) error {
			u := base + "/v1/kv/" + key
			if r, err := httpVia(ctx, client, http.MethodPut, u+"?timeout=2s", []byte(value)); err != nil || r.code != http.StatusOK {
				return fmt.Errorf("put: %v %d %s", err, r.code, bytes.TrimSpace(r.body))
			}
			if r, err := httpVia(ctx, client, http.MethodGet, u+"?timeout=2s", nil); err != nil || r.code != http.StatusOK || string(r.body) != value {
				return fmt.Errorf("get: %v %d %q, want %q", err, r.code, r.body, value)
			}
			return nil
		}
	}
	var workers []worker
	for _, i := range others {
		for range 2 {
			workers = append(workers, worker{"http via " + c.ID(i), viaHTTP(c.HTTPClient(), c.URL(i))})
		}
	}
	workers = append(workers, worker{"pinned http", viaHTTP(pinned, targetURL)})
	workers = append(workers, worker{"pinned grpc", func(ctx context.Context, key, value string) error {
		if _, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(value)}); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		r, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
		if err != nil || string(r.GetKv().GetValue()) != value {
			return fmt.Errorf("get: %v %q, want %q", err, r.GetKv().GetValue(), value)
		}
		return nil
	}})

	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(floodTraffic)
	for w, wk := range workers {
		wg.Go(func() {
			for j := 0; j < 1000 && time.Now().Before(end); j++ {
				key, value := fmt.Sprintf("flood-%d-%d", w, j), fmt.Sprintf("v%d", j)
				octx, cancel := context.WithTimeout(ctx, 5*time.Second)
				start := time.Now()
				err := wk.op(octx, key, value)
				d := time.Since(start)
				cancel()
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					failures = append(failures, fmt.Sprintf("%s %s after %v: %v", wk.name, key, d.Round(time.Millisecond), err))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return lat, failures
}

// httpVia sends one request with client.
func httpVia(ctx context.Context, client *http.Client, method, u string, body []byte) (httpResult, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return httpResult{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return httpResult{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// metricsVia reads the client connection metrics from base's /metrics,
// keyed "open{port="http"}", "max{...}" and "refused{...}".
func metricsVia(ctx context.Context, client *http.Client, base string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := httpVia(ctx, client, http.MethodGet, base+"/metrics", nil)
	if err != nil || r.code != http.StatusOK {
		return nil, fmt.Errorf("metrics of %s: %v %d", base, err, r.code)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(r.body)) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		for prefix, key := range map[string]string{
			"dialkv_client_connections{":               "open",
			"dialkv_client_connections_max{":           "max",
			"dialkv_client_connections_refused_total{": "refused",
		} {
			if labels, ok := strings.CutPrefix(name, prefix); ok {
				v, err := strconv.ParseFloat(value, 64)
				if err != nil {
					return nil, fmt.Errorf("metrics of %s: %q: %w", base, line, err)
				}
				out[key+"{"+labels] = v
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("metrics of %s: no dialkv_client_connections*", base)
	}
	return out, nil
}

// waitMetrics polls the target's metrics over the pinned client until
// cond holds, at most 15 s.
func waitMetrics(t *testing.T, ctx context.Context, pinned *http.Client, base string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	var last map[string]float64
	var lastErr error
	for range 150 {
		m, err := metricsVia(ctx, pinned, base)
		if err == nil && cond(m) {
			return m
		}
		last, lastErr = m, err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("connection metrics of %s never got there in 15s: %v %v", base, last, lastErr)
	return nil
}

// leadership is every node's view of every range it hosts: state, term and
// leader. Any election changes a term.
type leadership map[string]string

func (l leadership) equal(o leadership) bool {
	if len(l) != len(o) {
		return false
	}
	for k, v := range l {
		if o[k] != v {
			return false
		}
	}
	return true
}

// rangeLeadership asks every node for its status; the target through the
// pinned client, because a new connection to it may be refused.
func rangeLeadership(t *testing.T, ctx context.Context, c *Cluster, pinned *http.Client, target int) leadership {
	t.Helper()
	l := leadership{}
	for i := range c.N() {
		client := c.HTTPClient()
		if i == target {
			client = pinned
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := httpVia(sctx, client, http.MethodGet, c.URL(i)+"/v1/cluster/status", nil)
		cancel()
		if err != nil || r.code != http.StatusOK {
			t.Fatalf("status of %s: %v %d %s", c.ID(i), err, r.code, r.body)
		}
		var st kvpb.StatusResponse
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(r.body, &st); err != nil {
			t.Fatalf("status of %s: %v", c.ID(i), err)
		}
		for _, rs := range st.GetNode().GetRanges() {
			l[fmt.Sprintf("%s/r%d", c.ID(i), rs.GetId())] = fmt.Sprintf("%s term %d leader %s", rs.GetState(), rs.GetTerm(), rs.GetLeader())
		}
	}
	return l
}

// waitLeadersBalanced waits until every range has a leader that every
// replica agrees on and no node leads two ranges more than another (else
// placement would move a leadership, on purpose, during the test), and
// returns that state.
func waitLeadersBalanced(t *testing.T, c *Cluster) leadership {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		l := rangeLeadership(t, context.Background(), c, c.HTTPClient(), -1)
		leaders := map[string]string{} // range -> leader
		agreed := true
		for k, v := range l {
			_, rng, _ := strings.Cut(k, "/")
			f := strings.Fields(v)
			if len(f) < 5 || f[4] == "" || (leaders[rng] != "" && leaders[rng] != f[4]) {
				agreed = false
				break
			}
			leaders[rng] = f[4]
		}
		counts := map[string]int{}
		for _, id := range leaders {
			counts[id]++
		}
		lo, hi := len(leaders), 0
		for i := range c.N() {
			lo, hi = min(lo, counts[c.ID(i)]), max(hi, counts[c.ID(i)])
		}
		if agreed && hi-lo <= 1 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaders not settled and balanced within 60s: %v", l)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// openFDs counts the descriptors process pid holds.
func openFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// grepLines returns up to n lines of text that contain s.
func grepLines(text, s string, n int) string {
	var out []string
	for line := range strings.Lines(text) {
		if strings.Contains(line, s) && len(out) < n {
			out = append(out, strings.TrimRight(line, "\n"))
		}
	}
	return strings.Join(out, "\n")
}
