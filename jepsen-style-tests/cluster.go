package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/raftstore"
)

// Defaults of Options.
const (
	DefaultNodes            = 3
	DefaultHeartbeatTimeout = 500 * time.Millisecond
	DefaultElectionTimeout  = 500 * time.Millisecond
	DefaultReadyTimeout     = 30 * time.Second
	DefaultStopTimeout      = 10 * time.Second
	DefaultLeaderTimeout    = 15 * time.Second

	// startAttempts bounds Start's retries after a port clash (see
	// harness.FreePorts).
	startAttempts = 3
	// pollInterval is the longest pause between polls of /readyz and
	// /v1/cluster/status (see harness.Poll).
	pollInterval = 50 * time.Millisecond
	// requestTimeout bounds one harness HTTP request, so a paused or
	// wedged node cannot stall a poll loop.
	requestTimeout = time.Second
	// quitWait is how long Stop waits after SIGQUIT (the Go runtime's
	// goroutine dump) before SIGKILL.
	quitWait = 2 * time.Second
)

// Errors returned by Cluster methods.
var (
	// ErrNotRunning: the node has no running process (never started, or
	// killed or stopped and not restarted).
	ErrNotRunning = errors.New("jepsen: node is not running")
	// ErrClosed: Close has been called; nothing can be started again.
	ErrClosed = errors.New("jepsen: cluster is closed")
	// ErrNoLeader: no live node claimed leadership before the deadline.
	ErrNoLeader = errors.New("jepsen: no leader")
)

// Options configures Start. KvdPath and Dir are required.
type Options struct {
	// KvdPath is the kvd binary (see BuildBinaries).
	KvdPath string
	// Dir is the parent directory of the nodes: node n<i> keeps its data
	// in Dir/n<i>/data and its log (stdout and stderr, appended across
	// restarts) in Dir/n<i>/kvd.log.
	Dir string
	// Nodes is the number of nodes, ids n1..nN (default 3).
	Nodes int
	// HeartbeatTimeout and ElectionTimeout go to kvd's
	// --raft-heartbeat-timeout and --raft-election-timeout (default 500ms
	// each, so that failover is quick).
	HeartbeatTimeout, ElectionTimeout time.Duration
	// ReadyTimeout bounds Start's wait for every node's /readyz, and
	// WaitReady's when its context has no deadline (default 30s).
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop and Close wait after SIGTERM before
	// escalating to SIGKILL (default 10s).
	StopTimeout time.Duration
	// LogLevel is kvd's --log-level (default "info").
	LogLevel string
	// ExtraArgs are appended to every node's `kvd serve` command line.
	ExtraArgs []string
	// NodeArgs, when set, returns more arguments for node i (0-based),
	// appended after ExtraArgs.
	NodeArgs func(i int) []string
	// MaxOpenFiles, when set, lowers every node's RLIMIT_NOFILE (soft and
	// hard) to this many descriptors: the node is started through
	// `sh -c 'ulimit -n N && exec kvd ...'`, so its PID is still kvd's.
	MaxOpenFiles int
	// PeerAddr, when set, is asked for every ordered pair of distinct
	// nodes which address node from should dial to reach node to, whose
	// Raft address is raftAddr; an answer other than raftAddr becomes
	// `--peer-proxy raftAddr=answer` on from's command line. Net.PeerAddr
	// routes every node-to-node link through a fault-injecting proxy. It
	// may be called again with new Raft addresses when Start retries after
	// a port clash.
	PeerAddr func(from, to int, raftAddr string) (string, error)
	// TLS puts mutual TLS on every node's client and peer ports, with a
	// CA and certificates Start makes in CertDir (see tls.go); the
	// harness's own requests then present the root user's certificate.
	TLS bool
	// Logf, when set, receives one line per harness event (start, kill,
	// stop, ...); pass t.Logf.
	Logf func(format string, args ...any)
}

func (o *Options) setDefaults() error {
	if o.KvdPath == "" {
		return errors.New("jepsen: Options.KvdPath is required")
	}
	if o.Dir == "" {
		return errors.New("jepsen: Options.Dir is required")
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < 1 || o.Nodes > 99 {
		return fmt.Errorf("jepsen: Options.Nodes must be between 1 and 99, got %d", o.Nodes)
	}
	if o.HeartbeatTimeout == 0 {
		o.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if o.ElectionTimeout == 0 {
		o.ElectionTimeout = DefaultElectionTimeout
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Cluster is a set of real `kvd serve` processes on 127.0.0.1, controlled
// by PID. Its methods are safe for concurrent use. Node indices are 0-based:
// index i is node id "n<i+1>".
type Cluster struct {
	opts Options
	// client is shared by the harness and, through HTTPClient, by tests;
	// Stop, Restart and Close drop its idle connections first (see
	// HTTPClient).
	client *http.Client

	mu      sync.Mutex
	nodes   []*node
	pids    []int // every PID ever started, in order
	crashes []Crash
	closed  bool
}

// node is one member: its fixed identity and flags, and its current (or
// last) process. Fields after proc are guarded by Cluster.mu.
type node struct {
	id                           string
	grpcAddr, httpAddr, raftAddr string
	dataDir, logPath             string
	args                         []string // `kvd serve ...`, the same on every (re)start
	// kvdPath is the binary of the node's next start, when SetKvdPath
	// changed it from Options.KvdPath (an upgrade test).
	kvdPath string

	proc   *process // nil until first started
	paused bool
}

// process is one started kvd. An exit that Stop or Kill did not ask for
// (harness.Process.Told) is a crash.
type process struct {
	*harness.Process
	pid int
}

// Crash is a node process that exited without being told to.
type Crash struct {
	Node string
	PID  int
	At   time.Time
	Err  string // the process's exit status
}

func (p *process) exited() bool {
	done, _ := p.Exited()
	return done
}

// Start launches opts.Nodes kvd processes bootstrapping one cluster with
// --initial-cluster, and waits until every node's /readyz answers 200 (at
// most opts.ReadyTimeout, and no later than ctx). When a node fails to bind
// a port that was free a moment before (see freePorts), Start wipes the new
// data directories and tries again with fresh ports, at most 3 times. On
// error every process started so far is stopped.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if opts.TLS {
		if err := makeCerts(opts.CertDir(), opts.Nodes); err != nil {
			return nil, err
		}
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		c, clash, err := startOnce(ctx, opts)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !clash || ctx.Err() != nil {
			break
		}
		opts.Logf("jepsen: port clash on start attempt %d, retrying with new ports: %v", attempt, err)
		for i := range opts.Nodes {
			if err := os.RemoveAll(filepath.Join(opts.Dir, nodeID(i), "data")); err != nil {
				return nil, fmt.Errorf("jepsen: wipe data after port clash: %w", err)
			}
		}
	}
	return nil, lastErr
}

func nodeID(i int) string { return fmt.Sprintf("n%d", i+1) }

// startOnce is one attempt of Start. clash reports that a node could not
// bind one of its ports.
func startOnce(ctx context.Context, opts Options) (c *Cluster, clash bool, err error) {
	ports, err := harness.FreePorts(3 * opts.Nodes)
	if err != nil {
		return nil, false, fmt.Errorf("jepsen: %w", err)
	}
	client, err := opts.harnessClient()
	if err != nil {
		return nil, false, err
	}
	c = &Cluster{opts: opts, client: client}
	var initial []string
	for i := range opts.Nodes {
		n := &node{
			id:       nodeID(i),
			grpcAddr: fmt.Sprintf("127.0.0.1:%d", ports[3*i]),
			httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[3*i+1]),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]),
		}
		base := filepath.Join(opts.Dir, n.id)
		n.dataDir, n.logPath = filepath.Join(base, "data"), filepath.Join(base, "kvd.log")
		if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
			return nil, false, fmt.Errorf("jepsen: %w", err)
		}
		initial = append(initial, n.id+"="+n.raftAddr)
		c.nodes = append(c.nodes, n)
	}
	for i, n := range c.nodes {
		n.args = []string{"serve",
			"--id", n.id,
			"--data-dir", n.dataDir,
			"--grpc-addr", n.grpcAddr,
			"--http-addr", n.httpAddr,
			"--raft-addr", n.raftAddr,
			"--initial-cluster", strings.Join(initial, ","),
			"--raft-heartbeat-timeout", opts.HeartbeatTimeout.String(),
			"--raft-election-timeout", opts.ElectionTimeout.String(),
			"--log-level", opts.LogLevel,
		}
		n.args = append(n.args, opts.tlsArgs(n.id)...)
		n.args = append(n.args, opts.ExtraArgs...)
		if opts.PeerAddr != nil {
			for j, peer := range c.nodes {
				if j == i {
					continue
				}
				addr, err := opts.PeerAddr(i, j, peer.raftAddr)
				if err != nil {
					return nil, false, fmt.Errorf("jepsen: peer address %s->%s: %w", n.id, peer.id, err)
				}
				if addr != peer.raftAddr {
					n.args = append(n.args, "--peer-proxy", peer.raftAddr+"="+addr)
				}
			}
		}
		if opts.NodeArgs != nil {
			n.args = append(n.args, opts.NodeArgs(i)...)
		}
	}

	c.mu.Lock()
	for _, n := range c.nodes {
		if err := c.startLocked(n); err != nil {
			c.mu.Unlock()
			c.Close()
			return nil, false, err
		}
	}
	c.mu.Unlock()

	rctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	if err := c.WaitReady(rctx); err != nil {
		for i := range c.nodes {
			if tail, _ := c.LogTail(i, 200); strings.Contains(tail, "address already in use") {
				clash = true
			}
		}
		c.Close()
		return nil, clash, err
	}
	return c, false, nil
}

// startLocked starts n's process with its fixed flags. Its output is
// appended to n.logPath after a marker line.
func (c *Cluster) startLocked(n *node) error {
	if c.closed {
		return ErrClosed
	}
	if n.proc != nil && !n.proc.exited() {
		return fmt.Errorf("jepsen: %s is already running (pid %d)", n.id, n.proc.pid)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("jepsen: open log of %s: %w", n.id, err)
	}
	defer f.Close() // the child holds its own descriptor
	bin := c.opts.KvdPath
	if n.kvdPath != "" {
		bin = n.kvdPath
	}
	fmt.Fprintf(f, "=== jepsen harness %s: starting %s: %s %s\n",
		time.Now().Format(time.RFC3339Nano), n.id, bin, strings.Join(n.args, " "))
	cmd := exec.Command(bin, n.args...)
	if c.opts.MaxOpenFiles > 0 {
		script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, c.opts.MaxOpenFiles)
		cmd = exec.Command("/bin/sh", append([]string{"-c", script, bin}, n.args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	// A process group of its own (a Ctrl-C on the terminal reaches only
	// the harness, which then stops nodes by PID), and SIGKILL from the
	// kernel if the harness dies without calling Close, so a crashed or
	// timed-out test leaves no orphan kvd behind.
	hp, err := harness.Start(cmd, harness.ProcOptions{DeathSignal: syscall.SIGKILL, QuitWait: quitWait})
	if err != nil {
		return fmt.Errorf("jepsen: start %s: %w", n.id, err)
	}
	// The PID goes in the log too, so a crash can be matched to its
	// section (see PanicLine); the child takes milliseconds to write its
	// first line.
	fmt.Fprintf(f, "=== jepsen harness: %s is pid %d\n", n.id, hp.PID())
	p := &process{Process: hp, pid: hp.PID()}
	go func() {
		<-p.Done()
		if !p.Told() {
			_, exitErr := p.Exited()
			c.mu.Lock()
			c.crashes = append(c.crashes, Crash{Node: n.id, PID: p.pid, At: time.Now(), Err: fmt.Sprint(exitErr)})
			c.mu.Unlock()
			c.opts.Logf("jepsen: %s pid %d exited on its own: %v", n.id, p.pid, exitErr)
		}
	}()
	n.proc, n.paused = p, false
	c.pids = append(c.pids, p.pid)
	c.opts.Logf("jepsen: started %s pid %d (grpc %s, http %s, raft %s)", n.id, p.pid, n.grpcAddr, n.httpAddr, n.raftAddr)
	return nil
}

func (c *Cluster) node(i int) (*node, error) {
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("jepsen: node index %d out of range [0, %d)", i, len(c.nodes))
	}
	return c.nodes[i], nil
}

// running returns node i's live process, or ErrNotRunning.
func (c *Cluster) running(i int) (*node, *process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return nil, nil, err
	}
	if n.proc == nil || n.proc.exited() {
		return n, nil, fmt.Errorf("%w: %s", ErrNotRunning, n.id)
	}
	return n, n.proc, nil
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.nodes) }

// ID is node i's id, "n<i+1>".
func (c *Cluster) ID(i int) string { return c.nodes[i].id }

// Index is the index of the node with id, or -1.
func (c *Cluster) Index(id string) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// GRPCAddrs are the nodes' client gRPC addresses (host:port), by index.
func (c *Cluster) GRPCAddrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.grpcAddr
	}
	return out
}

// HTTPAddrs are the nodes' client HTTP addresses (host:port), by index.
func (c *Cluster) HTTPAddrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.httpAddr
	}
	return out
}

// HTTPClient is an HTTP client for talking to the nodes (30s timeout; use
// a context for less). Stop, Restart and Close close its idle connections
// before signalling a node: kvd's HTTP server waits up to 5s on SIGTERM
// for a connection that was opened but has not sent a request, which the
// transport's connection pool leaves behind under concurrency.
func (c *Cluster) HTTPClient() *http.Client { return c.client }

// URL is node i's HTTP base URL, "http://host:port" ("https://" with
// TLS).
func (c *Cluster) URL(i int) string { return c.opts.scheme() + "://" + c.nodes[i].httpAddr }

// RaftAddrs are the nodes' Raft addresses (host:port), by index.
func (c *Cluster) RaftAddrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.raftAddr
	}
	return out
}

// LogPath is node i's log file (every start of the node appends to it).
func (c *Cluster) LogPath(i int) string { return c.nodes[i].logPath }

// DataDir is node i's --data-dir.
func (c *Cluster) DataDir(i int) string { return c.nodes[i].dataDir }

// PID is node i's current PID, or 0 when it is not running.
func (c *Cluster) PID(i int) int {
	if _, p, err := c.running(i); err == nil {
		return p.pid
	}
	return 0
}

// Crashes lists the processes that exited without the harness asking
// (a panic, a fatal error), in order.
func (c *Cluster) Crashes() []Crash {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Crash(nil), c.crashes...)
}

// PanicLine returns the first "panic:", "fatal error:" or "kvd:" line (the
// error kvd exits with, cmd/kvd) that the process pid of node i wrote to
// its log, or "".
func (c *Cluster) PanicLine(i, pid int) string {
	b, err := os.ReadFile(c.nodes[i].logPath)
	if err != nil {
		return ""
	}
	marker := fmt.Sprintf("=== jepsen harness: %s is pid %d", c.nodes[i].id, pid)
	in := false
	for l := range strings.SplitSeq(string(b), "\n") {
		switch {
		case l == marker:
			in = true
		case strings.HasPrefix(l, "=== jepsen harness"):
			in = false
		case in && (strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "kvd: ")):
			return l
		}
	}
	return ""
}

// PIDs is every PID the cluster has started, in start order.
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.pids...)
}

// Running reports whether node i has a live process (paused counts as
// live).
func (c *Cluster) Running(i int) bool {
	_, _, err := c.running(i)
	return err == nil
}

// Paused reports whether node i is stopped with SIGSTOP.
func (c *Cluster) Paused(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	return n.paused && n.proc != nil && !n.proc.exited()
}

// Kill sends SIGKILL to node i's process and waits for it to exit.
func (c *Cluster) Kill(i int) error {
	n, p, err := c.running(i)
	if err != nil {
		return err
	}
	c.opts.Logf("jepsen: SIGKILL %s pid %d", n.id, p.pid)
	if err := p.Kill(); err != nil {
		return fmt.Errorf("jepsen: kill %s (pid %d): %w", n.id, p.pid, err)
	}
	return nil
}

// Stop sends SIGTERM to node i's process (and SIGCONT, in case it is
// paused), waits up to Options.StopTimeout for it to exit, then escalates
// to SIGKILL. It returns an error when the node did not exit cleanly
// (non-zero status, or it needed SIGKILL); the process is gone either way.
func (c *Cluster) Stop(i int) error {
	n, p, err := c.running(i)
	if err != nil {
		return err
	}
	return c.stopProcess(n, p)
}

func (c *Cluster) stopProcess(n *node, p *process) error {
	c.client.CloseIdleConnections()
	c.opts.Logf("jepsen: SIGTERM %s pid %d", n.id, p.pid)
	start := time.Now()
	// SIGTERM (and SIGCONT, in case it is paused); after StopTimeout
	// SIGQUIT, so that the Go runtime writes every goroutine's stack to
	// the node's log, which shows where the shutdown hung; then SIGKILL.
	err := p.Stop(c.opts.StopTimeout)
	if err == nil {
		_, exitErr := p.Exited()
		c.opts.Logf("jepsen: %s pid %d exited %v after SIGTERM (%v)", n.id, p.pid, time.Since(start).Round(time.Millisecond), p.State())
		if exitErr != nil {
			return fmt.Errorf("jepsen: %s (pid %d) exited uncleanly after SIGTERM: %w", n.id, p.pid, exitErr)
		}
		return nil
	}
	if !errors.Is(err, harness.ErrKilled) {
		return fmt.Errorf("jepsen: %s (pid %d): %w", n.id, p.pid, err)
	}
	c.opts.Logf("jepsen: %s pid %d ignored SIGTERM for %v; sent SIGQUIT (goroutine dump in its log), then SIGKILL", n.id, p.pid, c.opts.StopTimeout)
	if dump := goroutineDump(n.logPath); dump != "" {
		c.opts.Logf("jepsen: %s pid %d goroutines when it hung:\n%s", n.id, p.pid, dump)
	}
	return fmt.Errorf("jepsen: %s (pid %d) did not exit within %v of SIGTERM; killed", n.id, p.pid, c.opts.StopTimeout)
}

// Restart starts node i again with the same flags and data directory. A
// node that is still running is first stopped with Stop (whose error is
// returned only if the restart itself fails). Restart does not wait for
// readiness: call WaitReady (a lone restarted node cannot become ready
// until a quorum of its peers is up).
func (c *Cluster) Restart(i int) error {
	var stopErr error
	if n, p, err := c.running(i); err == nil {
		stopErr = c.stopProcess(n, p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	if err := c.startLocked(n); err != nil {
		return errors.Join(err, stopErr)
	}
	return nil
}

// SetKvdPath makes node i run the kvd binary at path from its next start
// (Restart) on, with the same flags and data directory: the harness's
// way to upgrade or roll back one node of a running cluster.
func (c *Cluster) SetKvdPath(i int, path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	n.kvdPath = path
	return nil
}

// Rejoin starts node i afresh as a new member: its process must have
// exited (see Kill and Stop); its data directory is wiped and, from now on,
// it starts with `--join` through node via's client gRPC address instead
// of --initial-cluster. Remove it from the membership first (its id and
// Raft address stay the same). Like Restart, it does not wait for
// readiness.
func (c *Cluster) Rejoin(i, via int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	v, err := c.node(via)
	if err != nil {
		return err
	}
	if n.proc != nil && !n.proc.exited() {
		return fmt.Errorf("jepsen: rejoin %s: still running (pid %d)", n.id, n.proc.pid)
	}
	if err := os.RemoveAll(n.dataDir); err != nil {
		return fmt.Errorf("jepsen: rejoin %s: wipe data: %w", n.id, err)
	}
	if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
		return fmt.Errorf("jepsen: rejoin %s: %w", n.id, err)
	}
	args := make([]string, 0, len(n.args))
	for k := 0; k < len(n.args); k++ {
		switch n.args[k] {
		case "--initial-cluster", "--join":
			k++ // drop the flag and its value
			continue
		}
		args = append(args, n.args[k])
	}
	n.args = append(args, "--join", v.grpcAddr)
	c.opts.Logf("jepsen: %s rejoins through %s with an empty data directory", n.id, v.id)
	return c.startLocked(n)
}

// Pause freezes node i with SIGSTOP: it holds its sockets but answers
// nothing, like a long GC pause or a hung VM.
func (c *Cluster) Pause(i int) error {
	return c.signalPause(i, syscall.SIGSTOP, true)
}

// Resume continues a paused node with SIGCONT.
func (c *Cluster) Resume(i int) error {
	return c.signalPause(i, syscall.SIGCONT, false)
}

func (c *Cluster) signalPause(i int, sig syscall.Signal, paused bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.node(i)
	if err != nil {
		return err
	}
	if n.proc == nil || n.proc.exited() {
		return fmt.Errorf("%w: %s", ErrNotRunning, n.id)
	}
	c.opts.Logf("jepsen: %v %s pid %d", sig, n.id, n.proc.pid)
	if err := n.proc.Signal(sig); err != nil {
		return fmt.Errorf("jepsen: signal %s (pid %d): %w", n.id, n.proc.pid, err)
	}
	n.paused = paused
	return nil
}

// Close stops every process the cluster started that is still running
// (SIGTERM, then SIGKILL after Options.StopTimeout), in parallel, and
// waits for them. Nothing can be started afterwards. Calling it again is
// safe and returns nil. Register it with t.Cleanup right after Start.
func (c *Cluster) Close() error {
	c.mu.Lock()
	c.closed = true
	type victim struct {
		n *node
		p *process
	}
	var victims []victim
	for _, n := range c.nodes {
		if n.proc != nil && !n.proc.exited() {
			victims = append(victims, victim{n, n.proc})
		}
	}
	c.mu.Unlock()

	errs := make([]error, len(victims))
	var wg sync.WaitGroup
	for k, v := range victims {
		wg.Go(func() { errs[k] = c.stopProcess(v.n, v.p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitReady polls /readyz of the given nodes (all when none are given)
// until each answers 200 (see harness.Poll; at most 50ms apart). It fails
// early when a node's process exits, and at ctx's deadline
// (Options.ReadyTimeout when ctx has none).
func (c *Cluster) WaitReady(ctx context.Context, nodes ...int) error {
	if len(nodes) == 0 {
		for i := range c.nodes {
			nodes = append(nodes, i)
		}
	}
	ctx, cancel := withDefaultDeadline(ctx, c.opts.ReadyTimeout)
	defer cancel()
	for _, i := range nodes {
		n, p, err := c.running(i)
		if err != nil {
			return err
		}
		var last string
		err = harness.Poll(ctx, timeLeft(ctx), pollInterval, func(ctx context.Context) (bool, error) {
			if done, exitErr := p.Exited(); done {
				tail, _ := c.LogTail(i, 20)
				return false, fmt.Errorf("jepsen: %s (pid %d) exited while waiting for readiness (%v); log tail:\n%s", n.id, p.pid, exitErr, tail)
			}
			code, body, err := c.get(ctx, i, "/readyz")
			switch {
			case err != nil:
				last = err.Error()
			case code == http.StatusOK:
				return true, nil
			default:
				last = fmt.Sprintf("%d %s", code, strings.TrimSpace(string(body)))
			}
			return false, nil
		})
		if errors.Is(err, harness.ErrNotYet) {
			return fmt.Errorf("jepsen: %s not ready: %w (last answer: %s)", n.id, err, last)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// withDefaultDeadline is ctx, bounded by d from now when it has no
// deadline.
func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// timeLeft is the time until ctx's deadline, at least a millisecond (one
// poll, then Poll returns ctx's error).
func timeLeft(ctx context.Context) time.Duration {
	dl, _ := ctx.Deadline()
	return max(time.Until(dl), time.Millisecond)
}

// get does one bounded GET against node i's HTTP API.
func (c *Cluster) get(ctx context.Context, i int, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(i)+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// Status asks node i for GET /v1/cluster/status.
func (c *Cluster) Status(ctx context.Context, i int) (*kvpb.StatusResponse, error) {
	return c.status(ctx, i, false)
}

// status is Status, with every range's state digest when digest is set.
func (c *Cluster) status(ctx context.Context, i int, digest bool) (*kvpb.StatusResponse, error) {
	path := "/v1/cluster/status"
	if digest {
		path += "?digest=true"
	}
	code, body, err := c.get(ctx, i, path)
	if err != nil {
		return nil, fmt.Errorf("jepsen: status of %s: %w", c.ID(i), err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("jepsen: status of %s: %d %s", c.ID(i), code, bytes.TrimSpace(body))
	}
	var st kvpb.StatusResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("jepsen: status of %s: %w", c.ID(i), err)
	}
	return &st, nil
}

// rangeFor is the status of the user range (not the meta range) holding
// key, as node st sees it, or nil when st hosts none.
func rangeFor(st *kvpb.StatusResponse, key string) *kvpb.RangeStatus {
	for _, r := range st.GetNode().GetRanges() {
		if r.GetId() == raftstore.MetaRangeID {
			continue
		}
		if string(r.GetStart()) <= key && (len(r.GetEnd()) == 0 || key < string(r.GetEnd())) {
			return r
		}
	}
	return nil
}

// Leader returns the index of the node leading the user range that holds
// the start of the key space (the one every test key lands in until ranges
// split): LeaderOf(ctx, "").
func (c *Cluster) Leader(ctx context.Context) (int, error) { return c.LeaderOf(ctx, "") }

// LeaderOf returns the index of the node leading the user range that
// holds key, polling (see harness.Poll; at most 50ms apart) until a
// running, unpaused node reports state "Leader" for it, or ctx's deadline
// (15s when ctx has none). When several nodes claim leadership (a deposed
// leader that has not noticed yet), the one with the highest term wins.
func (c *Cluster) LeaderOf(ctx context.Context, key string) (int, error) {
	ctx, cancel := withDefaultDeadline(ctx, DefaultLeaderTimeout)
	defer cancel()
	var last []string
	leader := -1
	err := harness.Poll(ctx, timeLeft(ctx), pollInterval, func(ctx context.Context) (bool, error) {
		type claim struct {
			idx  int
			term uint64
		}
		claims := make([]*claim, len(c.nodes))
		errs := make([]string, len(c.nodes))
		var wg sync.WaitGroup
		for i := range c.nodes {
			if !c.Running(i) || c.Paused(i) {
				errs[i] = c.ID(i) + ": not running or paused"
				continue
			}
			wg.Go(func() {
				st, err := c.Status(ctx, i)
				if err != nil {
					errs[i] = err.Error()
					return
				}
				r := rangeFor(st, key)
				switch {
				case r == nil:
					errs[i] = fmt.Sprintf("%s: hosts no range for %q", c.ID(i), key)
				case r.GetState() == "Leader":
					claims[i] = &claim{i, r.GetTerm()}
				default:
					errs[i] = fmt.Sprintf("%s: %s, term %d, leader %q", c.ID(i), r.GetState(), r.GetTerm(), r.GetLeader())
				}
			})
		}
		wg.Wait()
		var best *claim
		for _, cl := range claims {
			if cl != nil && (best == nil || cl.term > best.term) {
				best = cl
			}
		}
		if best != nil {
			leader = best.idx
			return true, nil
		}
		last = errs
		return false, nil
	})
	if err != nil {
		return -1, fmt.Errorf("%w: %w (%s)", ErrNoLeader, err, strings.Join(last, "; "))
	}
	return leader, nil
}

// LogTail returns the last n lines of node i's log (at most its last
// 256 KiB).
func (c *Cluster) LogTail(i, n int) (string, error) {
	buf, err := readTail(c.nodes[i].logPath)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n"), nil
}

// goroutineDump returns the goroutine stacks the Go runtime wrote to a
// node's log on SIGQUIT (within the log's last 256 KiB), or "".
func goroutineDump(logPath string) string {
	buf, err := readTail(logPath)
	if err != nil {
		return ""
	}
	i := bytes.LastIndex(buf, []byte("SIGQUIT: quit"))
	if i < 0 {
		return ""
	}
	return string(buf[i:])
}

// readTail returns the last 256 KiB of the file at path.
func readTail(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const window = 256 << 10
	off := max(fi.Size()-window, 0)
	return io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
}

// TB is the part of testing.TB that DumpLogs needs.
type TB interface {
	Helper()
	Logf(format string, args ...any)
}

// DumpLogs logs the last lines of every node's log, one Logf per node.
// Tests call it when they fail: t.Cleanup(func() { if t.Failed() {
// c.DumpLogs(t, 60) } }).
func (c *Cluster) DumpLogs(t TB, lines int) {
	t.Helper()
	for i, n := range c.nodes {
		tail, err := c.LogTail(i, lines)
		if err != nil {
			t.Logf("--- %s log %s: %v", n.id, n.logPath, err)
			continue
		}
		t.Logf("--- last %d lines of %s log %s (pids %v):\n%s", lines, n.id, n.logPath, c.PIDs(), tail)
	}
}

// BuildBinaries builds kvd and kvctl into dir with `go build -o` from the
// module root (found by walking up from the working directory to go.mod)
// and returns their paths.
func BuildBinaries(dir string) (kvd, kvctl string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", err
	}
	kvd, kvctl = filepath.Join(dir, "kvd"), filepath.Join(dir, "kvctl")
	for _, b := range []struct{ out, pkg string }{{kvd, "./cmd/kvd"}, {kvctl, "./cmd/kvctl"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return "", "", fmt.Errorf("jepsen: go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return kvd, kvctl, nil
}

// ModuleRoot walks up from the working directory to the directory holding
// go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 64 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("jepsen: no go.mod above the working directory")
}
