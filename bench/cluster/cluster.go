package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultNodes        = 3
	DefaultReadyTimeout = 60 * time.Second
	// pollInterval is how often health endpoints are polled.
	pollInterval = 100 * time.Millisecond
	// requestTimeout bounds one health request.
	requestTimeout = time.Second
)

// Options configures StartDialkv and StartEtcd.
type Options struct {
	// Binary is the kvd binary for dialkv, the etcdnode binary for etcd.
	Binary string
	// Dir is the parent of the members' directories: member NAME keeps its
	// data in Dir/NAME/data and its log in Dir/NAME/NAME.log.
	Dir string
	// Nodes is the member count (default 3).
	Nodes int
	// PortBase lays out the ports as `kvd cluster` does: member i
	// (1-based) uses PortBase+10i and the next ports (dialkv: gRPC, HTTP,
	// Raft; etcd: client, peer). Zero picks free ports from the kernel.
	PortBase int
	// ExtraArgs are appended to every member's command line.
	ExtraArgs []string
	// ReadyTimeout bounds Start's wait for health (default 60s).
	ReadyTimeout time.Duration
}

func (o *Options) setDefaults() error {
	if o.Binary == "" || o.Dir == "" {
		return errors.New("cluster: Binary and Dir are required")
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 1 || o.Nodes > 9 {
		return fmt.Errorf("cluster: %d nodes: want 1 to 9", o.Nodes)
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	return nil
}

// Cluster is a running set of server processes of one system.
type Cluster struct {
	// System is "dialkv" or "etcd".
	System string
	// Procs are the members, in order.
	Procs []*Proc
	// Endpoints are the client addresses (host:port) of the members.
	Endpoints []string
	// HTTPAddrs are the members' HTTP addresses (dialkv only).
	HTTPAddrs []string
	// healthURLs answer 200 when the member can serve.
	healthURLs []string
	http       *http.Client
}

const host = "127.0.0.1"

// ports returns count ports per member for n members: from the plan when
// base > 0 (checked free), else from the kernel.
func ports(base, n, count int) ([][]int, error) {
	out := make([][]int, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := range n {
		for j := range count {
			addr := host + ":0"
			if base > 0 {
				addr = fmt.Sprintf("%s:%d", host, base+10*(i+1)+j)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("cluster: port %s is not free: %w", addr, err)
			}
			lns = append(lns, ln)
			out[i] = append(out[i], ln.Addr().(*net.TCPAddr).Port)
		}
	}
	return out, nil
}

// StartDialkv starts o.Nodes `kvd serve` processes (ids n1..nN) that
// bootstrap one cluster, and waits until every node's /readyz answers 200.
func StartDialkv(ctx context.Context, o Options) (*Cluster, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	pp, err := ports(o.PortBase, o.Nodes, 3)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range o.Nodes {
		initial = append(initial, fmt.Sprintf("n%d=%s:%d", i+1, host, pp[i][2]))
	}
	c := newCluster("dialkv")
	for i := range o.Nodes {
		name := fmt.Sprintf("n%d", i+1)
		grpcAddr := fmt.Sprintf("%s:%d", host, pp[i][0])
		httpAddr := fmt.Sprintf("%s:%d", host, pp[i][1])
		dataDir, logPath, err := memberDirs(o.Dir, name)
		if err != nil {
			c.Stop()
			return nil, err
		}
		args := append([]string{"serve",
			"--id", name, "--data-dir", dataDir,
			"--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--raft-addr", fmt.Sprintf("%s:%d", host, pp[i][2]),
			"--initial-cluster", strings.Join(initial, ","),
		}, o.ExtraArgs...)
		p, err := startProc(name, logPath, o.Binary, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Procs = append(c.Procs, p)
		c.Endpoints = append(c.Endpoints, grpcAddr)
		c.HTTPAddrs = append(c.HTTPAddrs, httpAddr)
		c.healthURLs = append(c.healthURLs, "http://"+httpAddr+"/readyz")
	}
	return c, c.start(ctx, o.ReadyTimeout)
}

// StartEtcd starts o.Nodes etcdnode processes (names e1..eN) that form one
// cluster, and waits until every member's /health answers 200.
func StartEtcd(ctx context.Context, o Options) (*Cluster, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	pp, err := ports(o.PortBase, o.Nodes, 2)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range o.Nodes {
		initial = append(initial, fmt.Sprintf("e%d=http://%s:%d", i+1, host, pp[i][1]))
	}
	c := newCluster("etcd")
	for i := range o.Nodes {
		name := fmt.Sprintf("e%d", i+1)
		clientAddr := fmt.Sprintf("%s:%d", host, pp[i][0])
		dataDir, logPath, err := memberDirs(o.Dir, name)
		if err != nil {
			c.Stop()
			return nil, err
		}
		args := append([]string{
			"-name", name, "-data-dir", dataDir,
			"-client-url", "http://" + clientAddr,
			"-peer-url", fmt.Sprintf("http://%s:%d", host, pp[i][1]),
			"-initial-cluster", strings.Join(initial, ","),
		}, o.ExtraArgs...)
		p, err := startProc(name, logPath, o.Binary, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Procs = append(c.Procs, p)
		c.Endpoints = append(c.Endpoints, clientAddr)
		c.healthURLs = append(c.healthURLs, "http://"+clientAddr+"/health")
	}
	return c, c.start(ctx, o.ReadyTimeout)
}

func newCluster(system string) *Cluster {
	return &Cluster{System: system, http: &http.Client{Timeout: requestTimeout}}
}

func memberDirs(parent, name string) (dataDir, logPath string, err error) {
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	return filepath.Join(dir, "data"), filepath.Join(dir, name+".log"), nil
}

// start waits for health and stops the cluster when it does not come up.
func (c *Cluster) start(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		c.Stop()
		return err
	}
	return nil
}

// WaitHealthy polls every member's health endpoint until all answer 200,
// a member exits, or ctx ends.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	for i, u := range c.healthURLs {
		p := c.Procs[i]
		for {
			if done, err := p.Exited(); done {
				return fmt.Errorf("%s %s exited during start-up (%v); log tail:\n%s", c.System, p.Name, err, p.LogTail(20))
			}
			if c.healthy(ctx, u) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s %s not healthy at %s: %w; log tail:\n%s", c.System, p.Name, u, ctx.Err(), p.LogTail(20))
			case <-time.After(pollInterval):
			}
		}
	}
	return nil
}

func (c *Cluster) healthy(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return false
	}
	// etcd's /health answers {"health":"true",...}; dialkv's /readyz
	// answers 200 only when ready.
	return c.System != "etcd" || strings.Contains(string(body), `"health":"true"`)
}

// PIDs returns the members' process ids.
func (c *Cluster) PIDs() []int {
	out := make([]int, len(c.Procs))
	for i, p := range c.Procs {
		out[i] = p.PID()
	}
	return out
}

// Stop stops every member by PID, in parallel: SIGTERM, then SIGKILL after
// DefaultStopTimeout.
func (c *Cluster) Stop() error {
	errs := make([]error, len(c.Procs))
	var wg sync.WaitGroup
	for i, p := range c.Procs {
		wg.Go(func() { errs[i] = p.Stop(DefaultStopTimeout) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
