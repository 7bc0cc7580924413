package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/workload"
	"github.com/dialkv/dialkv/harness"
)

// The two systems, in the order each round runs them.
var systems = []string{"dialkv", "etcd"}

// runSlack is how long a kvbench run may take beyond its -duration
// (connecting, the last operations, printing) before it is stopped.
const runSlack = 2 * time.Minute

// loadTimeout bounds loading the key space (or -memory-keys keys).
const loadTimeout = time.Hour

// kvbenchStopGrace is how long a kvbench stopped early (timeout, Ctrl-C)
// has to report what it measured before it is killed.
const kvbenchStopGrace = 10 * time.Second

type bench struct {
	o        *options
	dir      string
	out, log io.Writer
}

// startSystem starts one system's 3-member cluster under b.dir/system.
func (b *bench) startSystem(ctx context.Context, system string) (*cluster.Cluster, error) {
	opts := cluster.Options{Dir: filepath.Join(b.dir, system), PortBase: b.o.portBase}
	start := cluster.StartDialkv
	switch system {
	case "dialkv":
		opts.Binary = b.o.kvd
		opts.ExtraArgs = []string{"--log-level", "warn"}
	case "etcd":
		opts.Binary, opts.PortBase = b.o.etcdnode, b.o.portBase+100
		start = cluster.StartEtcd
	}
	began := time.Now()
	c, err := start(ctx, opts)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(b.log, "started %s in %.1fs: pids %v, endpoints %s\n",
		system, time.Since(began).Seconds(), c.PIDs(), strings.Join(c.Endpoints, ","))
	return c, nil
}

// stopSystem stops c by PID and reports how that went.
func (b *bench) stopSystem(c *cluster.Cluster) {
	if err := c.Stop(); err != nil {
		fmt.Fprintf(b.log, "stopping %s: %v\n", c.System, err)
		return
	}
	fmt.Fprintf(b.log, "stopped %s (pids %v)\n", c.System, c.PIDs())
}

// checkAlive fails when a member of c has exited.
func checkAlive(c *cluster.Cluster) error {
	for _, p := range c.Procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s member %s (pid %d) exited (%v); log tail:\n%s", c.System, p.Name, p.PID(), err, p.LogTail(30))
		}
	}
	return nil
}

// kvbench runs bin/kvbench against c with args and parses its JSON result.
// It also returns the CPU time kvbench used.
func (b *bench) kvbench(ctx context.Context, c *cluster.Cluster, timeout time.Duration, args ...string) (*workload.Result, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append([]string{
		"-system", c.System,
		"-endpoints", strings.Join(c.Endpoints, ","),
		"-value-size", strconv.Itoa(b.o.valueSize),
		"-conns", strconv.Itoa(b.o.conns),
		"-json",
	}, args...)
	cmd := exec.Command(b.o.kvbench, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	p, err := harness.Start(cmd, harness.ProcOptions{DeathSignal: syscall.SIGKILL})
	if err != nil {
		return nil, 0, fmt.Errorf("kvbench: %w", err)
	}
	// On timeout or Ctrl-C: SIGTERM by PID (kvbench then reports what it
	// has), SIGKILL 10 s later.
	select {
	case <-p.Done():
	case <-ctx.Done():
		if err := p.Stop(kvbenchStopGrace); err != nil {
			fmt.Fprintf(b.log, "stopping kvbench: %v\n", err)
		}
	}
	if _, err := p.Exited(); err != nil {
		return nil, 0, fmt.Errorf("kvbench %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	var res workload.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, 0, fmt.Errorf("kvbench output: %w", err)
	}
	if ctx.Err() != nil {
		return nil, 0, fmt.Errorf("kvbench %s: %w", strings.Join(full, " "), ctx.Err())
	}
	var cpu time.Duration
	if st := p.State(); st != nil {
		cpu = st.UserTime() + st.SystemTime()
	}
	return &res, cpu, nil
}

// load writes keys keys into c once each and checks that all were written.
func (b *bench) load(ctx context.Context, c *cluster.Cluster, keys int) (*workload.Result, error) {
	res, _, err := b.kvbench(ctx, c, loadTimeout, "-workload", "load", "-keys", strconv.Itoa(keys),
		"-clients", strconv.Itoa(b.o.clients), "-duration", loadTimeout.String())
	if err != nil {
		return nil, err
	}
	if !res.Complete || res.Total.Errors > 0 || res.Total.Ops != int64(keys) {
		return res, fmt.Errorf("loading %s: %d of %d keys written, %d errors %v", c.System, res.Total.Ops, keys, res.Total.Errors, res.ErrorSamples)
	}
	fmt.Fprintf(b.log, "loaded %d keys of %d bytes into %s in %.1fs (%.0f puts/s, p99 %.2f ms)\n",
		keys, b.o.valueSize, c.System, res.ElapsedSec, res.Total.OpsPerSec, res.Total.P99Ms)
	return res, checkAlive(c)
}

// startBoth starts both systems, stopping the first if the second fails.
func (b *bench) startBoth(ctx context.Context) (map[string]*cluster.Cluster, func(), error) {
	clusters := map[string]*cluster.Cluster{}
	stopAll := func() {
		for _, s := range systems {
			if c := clusters[s]; c != nil {
				b.stopSystem(c)
			}
		}
	}
	for _, s := range systems {
		c, err := b.startSystem(ctx, s)
		if err != nil {
			stopAll()
			return nil, nil, fmt.Errorf("start %s: %w", s, err)
		}
		clusters[s] = c
	}
	return clusters, stopAll, nil
}

var errInterrupted = errors.New("interrupted")

// leaders names each system's leader and kvbench's first endpoint. dialkv's
// client routes writes and linearizable reads to their range's leader, so
// one range's leader serves them all (the COST lines' busiest server);
// etcd's client spreads requests over all members round-robin, and its
// followers forward writes to the leader.
func (b *bench) leaders(ctx context.Context, clusters map[string]*cluster.Cluster) string {
	var parts []string
	for _, s := range systems {
		c := clusters[s]
		l, err := c.Leader(ctx)
		if err != nil {
			l = "unknown (" + err.Error() + ")"
		}
		parts = append(parts, fmt.Sprintf("%s leader %s (first endpoint %s)", s, l, c.Procs[0].Name))
	}
	return strings.Join(parts, "; ")
}
