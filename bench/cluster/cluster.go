package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// MaxNodes bounds Options.Nodes plus the members JoinDialkv adds: the
// members a port plan holds.
const MaxNodes = 9

// Defaults of Options.
const (
	DefaultNodes        = 3
	DefaultReadyTimeout = 60 * time.Second
	// pollInterval is the longest pause between polls of a health
	// endpoint (see harness.Poll).
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
	// Raft; etcd: client, peer). Zero picks a base below the kernel's
	// ephemeral range whose ports for MaxNodes members are all free now
	// (see FreePortBase), so that members started later by JoinDialkv
	// have theirs too.
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
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("cluster: %d nodes: want 1 to %d", o.Nodes, MaxNodes)
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
	// metricsURLs serve each member's Prometheus metrics (Sample).
	metricsURLs []string
	http        *http.Client
	// opts are the options the cluster was started with, PortBase
	// resolved: JoinDialkv starts more members with them.
	opts Options
}

const host = harness.Host

// FreePortBase returns a port base P below the kernel's ephemeral range
// such that the count ports of every member slot 1..MaxNodes (P+10i ..
// P+10i+count-1 on 127.0.0.1) could all be bound a moment ago (see
// harness.FreePortBase). It is racy by nature: another process may bind a
// port before the members do; a member then exits with "address already
// in use" and the caller may retry.
func FreePortBase(count int) (int, error) {
	base, err := harness.FreePortBase(MaxNodes, count)
	if err != nil {
		return 0, fmt.Errorf("cluster: %w", err)
	}
	return base, nil
}

// ports returns the count ports of each of members 0..n-1 of base's plan,
// checked free (all held at once, then released).
func ports(base, n, count int) ([][]int, error) {
	return slotPorts(base, 0, n, count)
}

// slotPorts returns the count ports of each of members from..to-1
// (0-based) of base's plan, checked free (all held at once, then
// released); out[k] belongs to member from+k.
func slotPorts(base, from, to, count int) ([][]int, error) {
	pp, err := harness.PlanPorts(base, from+1, to, count)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return pp, nil
}

// planPorts resolves o.PortBase (zero: FreePortBase) and checks the ports
// of o.Nodes members.
func planPorts(o *Options, count int) ([][]int, error) {
	if o.PortBase == 0 {
		base, err := FreePortBase(count)
		if err != nil {
			return nil, err
		}
		o.PortBase = base
	}
	return ports(o.PortBase, o.Nodes, count)
}

// StartDialkv starts o.Nodes `kvd serve` processes (ids n1..nN) that
// bootstrap one cluster, and waits until every node's /readyz answers 200.
func StartDialkv(ctx context.Context, o Options) (*Cluster, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	pp, err := planPorts(&o, 3)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range o.Nodes {
		initial = append(initial, fmt.Sprintf("n%d=%s:%d", i+1, host, pp[i][2]))
	}
	c := newCluster("dialkv", o)
	for i := range o.Nodes {
		if err := c.startDialkvMember(i, pp[i], "--initial-cluster", strings.Join(initial, ",")); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, c.start(ctx, o.ReadyTimeout)
}

// startDialkvMember starts member i (0-based, id n<i+1>) on ports pp
// (gRPC, HTTP, Raft) with how it finds its cluster (--initial-cluster or
// --join) and the cluster's extra arguments.
func (c *Cluster) startDialkvMember(i int, pp []int, how ...string) error {
	name := fmt.Sprintf("n%d", i+1)
	grpcAddr := fmt.Sprintf("%s:%d", host, pp[0])
	httpAddr := fmt.Sprintf("%s:%d", host, pp[1])
	dataDir, logPath, err := memberDirs(c.opts.Dir, name)
	if err != nil {
		return err
	}
	args := append([]string{"serve",
		"--id", name, "--data-dir", dataDir,
		"--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--raft-addr", fmt.Sprintf("%s:%d", host, pp[2]),
	}, how...)
	p, err := startProc(name, logPath, c.opts.Binary, append(args, c.opts.ExtraArgs...)...)
	if err != nil {
		return err
	}
	c.Procs = append(c.Procs, p)
	c.Endpoints = append(c.Endpoints, grpcAddr)
	c.HTTPAddrs = append(c.HTTPAddrs, httpAddr)
	c.healthURLs = append(c.healthURLs, "http://"+httpAddr+"/readyz")
	c.metricsURLs = append(c.metricsURLs, "http://"+httpAddr+"/metrics")
	return nil
}

// JoinDialkv starts one more `kvd serve` member (id n<N+1>, its ports
// from the cluster's port plan) that joins through member via's client
// address, and waits until its /readyz answers 200, at most the cluster's
// ReadyTimeout. Stop stops it with the others. The new member's Proc is
// returned; on an error it has been stopped. Not safe to call while
// another goroutine uses c.
func (c *Cluster) JoinDialkv(ctx context.Context, via int) (*Proc, error) {
	i := len(c.Procs)
	switch {
	case c.System != "dialkv":
		return nil, fmt.Errorf("cluster: JoinDialkv on a %s cluster", c.System)
	case i >= MaxNodes:
		return nil, fmt.Errorf("cluster: already %d members, the most a port plan holds", i)
	case via < 0 || via >= i:
		return nil, fmt.Errorf("cluster: no member %d to join through", via)
	}
	pp, err := slotPorts(c.opts.PortBase, i, i+1, 3)
	if err != nil {
		return nil, err
	}
	if err := c.startDialkvMember(i, pp[0], "--join", c.Endpoints[via]); err != nil {
		return nil, err
	}
	p := c.Procs[i]
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	if err := c.waitMember(ctx, i); err != nil {
		p.Stop(DefaultStopTimeout)
		return nil, err
	}
	return p, nil
}

// StartEtcd starts o.Nodes etcdnode processes (names e1..eN) that form one
// cluster, and waits until every member's /health answers 200.
func StartEtcd(ctx context.Context, o Options) (*Cluster, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	pp, err := planPorts(&o, 2)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range o.Nodes {
		initial = append(initial, fmt.Sprintf("e%d=http://%s:%d", i+1, host, pp[i][1]))
	}
	c := newCluster("etcd", o)
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
		c.metricsURLs = append(c.metricsURLs, "http://"+clientAddr+"/metrics")
	}
	return c, c.start(ctx, o.ReadyTimeout)
}

func newCluster(system string, o Options) *Cluster {
	return &Cluster{System: system, http: &http.Client{Timeout: requestTimeout}, opts: o}
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
// a member exits, or ctx ends (ReadyTimeout per member when ctx has no
// deadline).
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	for i := range c.healthURLs {
		if err := c.waitMember(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// waitMember polls member i's health endpoint until it answers 200, the
// member exits, or ctx ends (the cluster's ReadyTimeout from now when ctx
// has no deadline).
func (c *Cluster) waitMember(ctx context.Context, i int) error {
	u, p := c.healthURLs[i], c.Procs[i]
	timeout := c.opts.ReadyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	err := harness.Poll(ctx, timeout, pollInterval, func(ctx context.Context) (bool, error) {
		if done, err := p.Exited(); done {
			return false, fmt.Errorf("%s %s exited during start-up (%v); log tail:\n%s", c.System, p.Name, err, p.LogTail(20))
		}
		return c.healthy(ctx, u), nil
	})
	if errors.Is(err, harness.ErrNotYet) {
		return fmt.Errorf("%s %s not healthy at %s: %w; log tail:\n%s", c.System, p.Name, u, err, p.LogTail(20))
	}
	return err
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
