package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/api/client"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/driver/dialkv"
	"github.com/dialkv/dialkv/bench/layout"
	"github.com/dialkv/dialkv/bench/workload"
)

const (
	// replicationFactor is kvd's default --replicas.
	replicationFactor = 3
	// settleQuiet is how long the range count must stay the same before
	// the loaded cluster counts as split: kvd checks range sizes every 2 s.
	settleQuiet = 6 * time.Second
	// progressEvery paces the progress lines of the rebalancing.
	progressEvery = 5 * time.Second
	// readTimeout bounds one layout read.
	readTimeout = 10 * time.Second
	// loadOpTimeout bounds one put of the load; loadTimeout the load.
	loadOpTimeout = 30 * time.Second
	loadTimeout   = 2 * time.Hour
	mib           = 1 << 20
)

var errInterrupted = errors.New("interrupted")

type bench struct {
	o        *options
	dir      string
	out, log io.Writer
}

// runBench runs the whole benchmark and always stops the nodes before it
// returns. The report holds what was measured up to an error.
func (b *bench) runBench(ctx context.Context) (*report, error) {
	o := b.o
	need := 8*o.size + o.minFreeMiB*mib
	if free, err := freeBytes(b.dir); err != nil {
		return nil, err
	} else if free < need {
		return nil, fmt.Errorf("%s has %d MiB free; -size %d MiB needs %d MiB (8 times the size, for 4 nodes' data and Raft logs, plus -min-free-mib)",
			b.dir, free/mib, o.size/mib, need/mib)
	}
	keys := int(o.size / int64(o.valueSize))
	rep := &report{SizeBytes: o.size, ValueSize: o.valueSize, Keys: keys, RangeMaxBytes: o.rangeMaxBytes,
		ProbeRate: o.probeRate, ProbeValueSize: o.probeValue, ShareSec: -1, LeadersSec: -1, LeadershipsSec: -1, EndSec: -1,
		Started: time.Now().UTC().Format(time.RFC3339)}

	c, runDir, err := b.start(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(b.log, "stopping: %v\n", err)
		}
		fmt.Fprintf(b.log, "stopped pids %v\n", c.PIDs())
	}()
	fmt.Fprintf(b.log, "started 3 kvd nodes: pids %v, endpoints %s, data %s\n", c.PIDs(), strings.Join(c.Endpoints, ","), runDir)
	cli, err := client.New(client.Config{Endpoints: c.Endpoints})
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	// Load.
	fmt.Fprintf(b.log, "loading %d MiB: %d keys of %d bytes, %d writers, --range-max-bytes %d MiB\n",
		o.size/mib, keys, o.valueSize, o.loadClients, o.rangeMaxBytes/mib)
	if err := b.load(ctx, c, keys, rep); err != nil {
		return rep, b.interrupted(ctx, err)
	}

	// The probe runs from here to the end, so that no range hibernates
	// while the cluster settles and the baseline is measured warm.
	drv, err := dialkv.New(dialkv.Options{Endpoints: c.Endpoints})
	if err != nil {
		return rep, err
	}
	defer drv.Close()
	pr := newProbe(drv.Put, keys, o.probeValue, o.probeRate)
	pctx, stopProbe := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { pr.run(pctx) })
	defer func() { stopProbe(); wg.Wait() }()

	// Settle and balance the 3 nodes.
	sctx, cancel := context.WithTimeout(ctx, o.settleTimeout)
	began := time.Now()
	settled, err := b.settle(sctx, cli)
	if err == nil {
		fmt.Fprintf(b.log, "settled in %.1fs: %s\n", time.Since(began).Seconds(), settled)
		var bal layout.BalanceResult
		bal, err = layout.BalanceLeaders(sctx, cli, b.log)
		settled = bal.Layout
	}
	cancel()
	if err != nil {
		return rep, b.interrupted(ctx, fmt.Errorf("the loaded cluster did not settle: %w", err))
	}
	rep.SettleSec = time.Since(began).Seconds()
	rep.Ranges = len(settled.Ranges)
	rep.Before = nodeRows(settled, nil)
	rep.MetaLeaderBefore = settled.MetaLeader
	fmt.Fprintf(b.log, "before the join: %s; probe baseline %v\n", settled, o.baseline)
	if err := sleep(ctx, o.baseline); err != nil {
		return rep, err
	}

	// Join.
	t0 := time.Now()
	rep.ProbeBefore = pr.window(t0, t0.Add(-o.baseline), t0)
	p4, err := c.JoinDialkv(ctx, 0)
	if err != nil {
		return rep, b.interrupted(ctx, fmt.Errorf("start the 4th node: %w", err))
	}
	rep.NewNode = p4.Name
	rep.ReadySec = time.Since(t0).Seconds()
	fmt.Fprintf(b.log, "%s (pid %d) joined, ready after %.1fs\n", p4.Name, p4.PID(), rep.ReadySec)

	w, err := b.watch(ctx, cli, p4.Name, t0)
	end := time.Now()
	if !w.end.IsZero() {
		end = w.end
		rep.EndSec = end.Sub(t0).Seconds()
	}
	// A window shorter than a second or two says little; it still covers
	// the puts that ran while the replicas moved.
	rep.ProbeDuring = pr.window(t0, t0, end)
	if o.slow > 0 {
		rep.SlowPuts = pr.slow(t0, t0, end, o.slow)
	}
	rep.ShareSec = secondsFrom(t0, w.shareAt)
	rep.LeadersSec = secondsFrom(t0, w.balancedAt)
	rep.LeadershipsSec = secondsFrom(t0, w.allBalancedAt)
	if w.last != nil {
		rep.MetaLeader = w.last.MetaLeader
		rep.RangesAfter = len(w.last.Ranges)
		rep.After = nodeRows(w.last, func(id string) float64 {
			used := dirBytes(filepath.Join(runDir, id, "data"))
			return float64(used) / mib
		})
		if n := w.last.Node(p4.Name); n != nil {
			rep.NewReplicas, rep.NewLeaders = n.Replicas, n.Leaders
		}
	}
	rep.NewDataMiB = float64(dirBytes(filepath.Join(runDir, p4.Name, "data"))) / mib
	if rep.ShareSec > 0 {
		rep.NewMiBPerSec = rep.NewDataMiB / rep.ShareSec
	}
	if err == nil {
		err = checkAlive(c)
	}
	return rep, b.interrupted(ctx, err)
}

// start starts 3 nodes under a fresh directory of b.dir. With automatic
// ports a start can lose a port to another process; it is retried.
func (b *bench) start(ctx context.Context) (*cluster.Cluster, string, error) {
	args := append([]string{"--log-level", b.o.logLevel, "--range-max-bytes", fmt.Sprint(b.o.rangeMaxBytes)}, b.o.kvdArgs...)
	opts := cluster.Options{Binary: b.o.kvd, PortBase: b.o.portBase, ExtraArgs: args}
	c, dir, err := cluster.StartRetrying(ctx, cluster.StartDialkv, opts, b.dir, b.log)
	if err != nil && ctx.Err() != nil {
		return nil, "", errInterrupted
	}
	return c, dir, err
}

// load writes every key once.
func (b *bench) load(ctx context.Context, c *cluster.Cluster, keys int, rep *report) error {
	cfg := workload.DefaultConfig()
	cfg.Workload = workload.Load
	cfg.Keys = keys
	cfg.Clients = b.o.loadClients
	cfg.ValueSize = b.o.valueSize
	cfg.Duration = loadTimeout
	cfg.OpTimeout = loadOpTimeout
	d, err := dialkv.New(dialkv.Options{Endpoints: c.Endpoints})
	if err != nil {
		return err
	}
	defer d.Close()
	res, err := workload.Run(ctx, cfg, []workload.Driver{d})
	if err != nil {
		return err
	}
	rep.LoadSec = res.ElapsedSec
	rep.LoadMiBPerSec = float64(b.o.size) / mib / max(res.ElapsedSec, 1e-9)
	fmt.Fprintf(b.log, "loaded %d keys in %.1fs (%.1f MiB/s, p99 %.1f ms, %d errors)\n",
		res.Total.Ops, res.ElapsedSec, rep.LoadMiBPerSec, res.Total.P99Ms, res.Total.Errors)
	if !res.Complete || res.Total.Errors > 0 || res.Total.Ops != int64(keys) {
		return fmt.Errorf("load: %d of %d keys written, %d errors %v", res.Total.Ops, keys, res.Total.Errors, res.ErrorSamples)
	}
	return checkAlive(c)
}

// settle waits until the range count has stayed the same for settleQuiet
// (kvd has finished splitting), every range has its replicas, and every
// range's leader is confirmed by its replicas.
func (b *bench) settle(ctx context.Context, cli *client.Client) (*layout.Layout, error) {
	count, since := -1, time.Now()
	return layout.Wait(ctx, cli, func(l *layout.Layout) bool {
		if len(l.Ranges) != count {
			count, since = len(l.Ranges), time.Now()
			return false
		}
		if time.Since(since) < settleQuiet {
			return false
		}
		for _, r := range l.Ranges {
			if len(r.Replicas) != replicationFactor {
				return false
			}
		}
		return l.LeadersSettled()
	})
}

// watched is what watch saw of the rebalancing.
type watched struct {
	// shareAt, balancedAt and allBalancedAt are when the new node's fair
	// share, the balance of user-range leaders, and the balance of every
	// Raft group's leadership (the meta range's too) began to hold for
	// good (zero: not holding at the end).
	shareAt, balancedAt, allBalancedAt time.Time
	// lastChange is when the replicas or leaders last changed.
	lastChange time.Time
	// end is when the rebalancing was over: the share and the leader
	// balance both held (balanced), or else the last change before the
	// layout stayed the same for -quiet with the share in place.
	end      time.Time
	balanced bool
	last     *layout.Layout
}

// watch polls the layout from t0 until the new node holds its fair share
// and the leaders are balanced, both for -hold; or until the share holds
// and nothing has moved for -quiet (kvd's placement driver balances
// leaderships counting the meta range, so the user ranges alone may stay
// two apart); or until -timeout passes.
func (b *bench) watch(ctx context.Context, cli *client.Client, newID string, t0 time.Time) (watched, error) {
	w := watched{lastChange: t0}
	ctx, cancel := context.WithDeadline(ctx, t0.Add(b.o.timeout))
	defer cancel()
	polls := int(b.o.timeout/layout.PollInterval) + 1
	lastNote := time.Now()
	var readErr error
	var lastSig string
	for range polls {
		rctx, rcancel := context.WithTimeout(ctx, readTimeout)
		l, err := layout.Read(rctx, cli)
		rcancel()
		now := time.Now()
		if err != nil {
			readErr = err
		} else {
			w.last, readErr = l, nil
			if sig := signature(l); sig != lastSig {
				lastSig, w.lastChange = sig, now
			}
			joined := l.Node(newID) != nil
			share := l.HasFairShare(newID, replicationFactor)
			w.shareAt = since(w.shareAt, share, now)
			w.balancedAt = since(w.balancedAt, joined && l.LeadersBalanced(), now)
			w.allBalancedAt = since(w.allBalancedAt, joined && l.LeadershipsBalanced(), now)
			switch {
			case share && !w.balancedAt.IsZero() && now.Sub(later(w.shareAt, w.balancedAt)) >= b.o.hold:
				w.end, w.balanced = later(w.shareAt, w.balancedAt), true
			case share && now.Sub(w.lastChange) >= b.o.quiet:
				w.end = w.lastChange
			}
			if !w.end.IsZero() {
				fmt.Fprintf(b.log, "rebalanced (leaders balanced: %v) %.1fs after the join: %s\n", w.balanced, w.end.Sub(t0).Seconds(), l)
				return w, nil
			}
		}
		if now.Sub(lastNote) >= progressEvery {
			lastNote = now
			if err != nil {
				fmt.Fprintf(b.log, "  %.0fs: layout: %v\n", now.Sub(t0).Seconds(), err)
			} else {
				fmt.Fprintf(b.log, "  %.0fs: %s\n", now.Sub(t0).Seconds(), w.last)
			}
		}
		if sleep(ctx, layout.PollInterval) != nil {
			break
		}
	}
	if ctx.Err() != nil && ctx.Err() != context.DeadlineExceeded {
		return w, errInterrupted
	}
	why := fmt.Sprintf("last layout: %s", w.last)
	if readErr != nil {
		why = fmt.Sprintf("last read: %v", readErr)
	}
	return w, fmt.Errorf("after %v, %s does not hold its fair share in a settled layout (%s)", b.o.timeout, newID, why)
}

// signature identifies a layout's replicas and leaders, to see changes.
func signature(l *layout.Layout) string {
	var sb strings.Builder
	for _, r := range l.Ranges {
		fmt.Fprintf(&sb, "%d:%s:%s;", r.ID, strings.Join(r.Replicas, ","), r.Leader)
	}
	sb.WriteString(l.MetaLeader)
	return sb.String()
}

// since returns when a condition that holds now began to hold (start, or
// now if it did not hold before), or zero when it does not hold.
func since(start time.Time, holds bool, now time.Time) time.Time {
	switch {
	case !holds:
		return time.Time{}
	case start.IsZero():
		return now
	}
	return start
}

// secondsFrom is t's distance from t0 in seconds, -1 for a zero t.
func secondsFrom(t0, t time.Time) float64 {
	if t.IsZero() {
		return -1
	}
	return t.Sub(t0).Seconds()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// interrupted turns the error of a cancelled run into errInterrupted.
func (b *bench) interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return errInterrupted
	}
	return err
}

func checkAlive(c *cluster.Cluster) error {
	for _, p := range c.Procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s (pid %d) exited (%v); log tail:\n%s", p.Name, p.PID(), err, p.LogTail(30))
		}
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errInterrupted
	case <-t.C:
		return nil
	}
}

// freeBytes is the space left for unprivileged users on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// dirBytes is the space allocated to the files under dir.
func dirBytes(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // files come and go while the nodes run
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			} else {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}
