// Command rebalancebench measures how a dialkv cluster takes in a new
// node. It
//
//  1. starts 3 `kvd serve` nodes (fsync on) on 127.0.0.1 in a temporary
//     directory and loads -size bytes into them (-value-size-byte values
//     under kvbench's keys, -load-clients writers), which kvd splits into
//     ranges of at most -range-max-bytes (1 GiB at kvd's default 64 MiB:
//     about 16 to 23 ranges);
//  2. starts a light foreground probe: puts of -probe-value-size bytes on
//     random loaded keys, started -probe-rate times a second whether or
//     not the earlier ones have returned (open loop, so a stall is
//     sampled as often as calm), for the whole run;
//  3. waits until the range count has settled, every range has 3 replicas
//     and a leader, and balances the leaders over the 3 nodes, as a cluster
//     in steady state would have them; then lets the probe run -baseline;
//  4. starts a 4th node with --join and polls the layout (routing table
//     and every node's Status) until the new node holds its fair share of
//     replicas (ranges*3/4, within one, every range back at 3 replicas) and
//     the user ranges' leaders are balanced within one over the 4 nodes,
//     both for -hold; or, leaders unbalanced, until the share is in place
//     and nothing has moved for -quiet; at most -timeout;
//  5. reports, from the moment the 4th node was started: when its share
//     was in place, when the user ranges' leaders were balanced, when
//     every Raft group's leadership was (the meta range's counted too, as
//     kvd's placement driver counts them), the replicas and leaders of
//     every node before and after, the new node's data and the rate it
//     arrived at, and the probe's latency before the join and during the
//     rebalancing (p50, p99, max, errors);
//  6. stops every process it started, by PID, and removes its data (kept
//     with -keep or after a failure).
//
// Its last stdout line is machine-readable, with -1 for a time that was
// not reached:
//
//	REBALANCE size_mib <n> ranges <n> share_s <s> leaders_s <s> leaderships_s <s> end_s <s> new_replicas <n> new_leaders <n> p99_before_ms <ms> p99_during_ms <ms> max_during_ms <ms> p99_ratio <x>
//
// Exit code 0 when the new node got its share in time (whether or not the
// leaders were balanced: that is a measurement, not a failure), 1
// otherwise, 2 for bad flags. It builds nothing: kvd is looked up next to
// its own binary unless given (`make bench-rebalance` builds both into
// bin/).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
)

type options struct {
	kvd           string
	workDir       string
	keep          bool
	portBase      int
	logLevel      string
	kvdArgs       []string
	size          int64
	rangeMaxBytes int64
	valueSize     int
	loadClients   int
	probeRate     float64
	slow          time.Duration
	probeValue    int
	baseline      time.Duration
	hold          time.Duration
	quiet         time.Duration
	timeout       time.Duration
	settleTimeout time.Duration
	minFreeMiB    int64
	jsonOut       string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run takes its context from the caller, not from the signals alone, so
// that a test's deadline ends the run too: every process it started is
// stopped by PID before it returns, whatever ended it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "rebalancebench:", err)
		return 2
	}
	dir, err := cluster.WorkDir(o.workDir, "rebalancebench")
	if err != nil {
		fmt.Fprintln(stderr, "rebalancebench:", err)
		return 1
	}
	b := &bench{o: o, dir: dir, out: stdout, log: stderr}
	// runBench stops every process it started before it returns.
	rep, err := b.runBench(ctx)
	if rep != nil {
		rep.write(stdout)
		if o.jsonOut != "" {
			if jerr := rep.writeJSON(o.jsonOut); jerr != nil {
				fmt.Fprintln(stderr, "rebalancebench:", jerr)
			}
		}
	}
	if o.keep || err != nil {
		fmt.Fprintf(stderr, "rebalancebench: data and logs kept in %s\n", dir)
	} else if rerr := os.RemoveAll(dir); rerr != nil {
		fmt.Fprintln(stderr, "rebalancebench: remove", dir, rerr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "rebalancebench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("rebalancebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size, rangeMax := "1GiB", "64MiB"
	var kvdArgs string
	fs.StringVar(&o.kvd, "kvd", "", "kvd binary (default: next to this binary)")
	fs.StringVar(&o.workDir, "work-dir", "", "parent of the nodes' data and logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep data and logs (always kept after a failure)")
	fs.IntVar(&o.portBase, "port-base", 0, "node i uses port-base+10i..+2 on 127.0.0.1; 0 picks a free base below 32768")
	fs.StringVar(&o.logLevel, "log-level", "warn", "kvd --log-level")
	fs.StringVar(&kvdArgs, "kvd-args", "", "more kvd serve flags, space-separated")
	fs.StringVar(&size, "size", size, "bytes of values loaded before the join (B, KiB, MiB or GiB)")
	fs.StringVar(&rangeMax, "range-max-bytes", rangeMax, "kvd --range-max-bytes: ranges split past this size (B, KiB, MiB or GiB)")
	fs.IntVar(&o.valueSize, "value-size", 4096, "bytes per loaded value")
	fs.IntVar(&o.loadClients, "load-clients", 32, "closed-loop writers of the load")
	fs.Float64Var(&o.probeRate, "probe-rate", 200, "foreground probe puts started per second (open loop: at most 64 out at once)")
	fs.IntVar(&o.probeValue, "probe-value-size", 256, "bytes per probe put")
	fs.DurationVar(&o.slow, "slow", 0, "list every probe put during the rebalancing that took at least this long, with its key and time from the 4th node's start (0: none), to read beside the nodes' logs (-keep -log-level info)")
	fs.DurationVar(&o.baseline, "baseline", 20*time.Second, "probe window before the join (at 200 puts/s, 4,000 samples: a p99 of a few hundred moves by a factor of several between runs)")
	fs.DurationVar(&o.hold, "hold", 5*time.Second, "how long the new node's share and the leader balance must hold to count as done")
	fs.DurationVar(&o.quiet, "quiet", 30*time.Second, "with the share in place but the leaders not balanced, end when nothing has moved for this long (kvd moves leaderships once no replica is moving, each range at most once per 10s)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound of the rebalancing, from the 4th node's start")
	fs.DurationVar(&o.settleTimeout, "settle-timeout", 5*time.Minute, "bound of the wait for the loaded cluster's ranges and leaders")
	fs.Int64Var(&o.minFreeMiB, "min-free-mib", 1024, "refuse to start unless the work directory's file system keeps this many MiB free beyond 8 times -size")
	fs.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.kvdArgs = strings.Fields(kvdArgs)
	var err error
	if o.size, err = parseSize(size); err != nil {
		return nil, fmt.Errorf("-size: %w", err)
	}
	if o.rangeMaxBytes, err = parseSize(rangeMax); err != nil {
		return nil, fmt.Errorf("-range-max-bytes: %w", err)
	}
	if o.kvd, err = cluster.Binary(o.kvd, "kvd", "run `make build`, or pass -kvd"); err != nil {
		return nil, err
	}
	switch {
	case o.valueSize < 1 || o.valueSize > 1<<20:
		return nil, fmt.Errorf("-value-size %d: want 1 to 1048576 (kvd's --max-value-bytes)", o.valueSize)
	case o.size < int64(o.valueSize):
		return nil, fmt.Errorf("-size %d: want at least one value (-value-size %d)", o.size, o.valueSize)
	case o.size/int64(o.valueSize) > 1<<30:
		return nil, fmt.Errorf("-size %d: more than 2^30 keys of -value-size %d", o.size, o.valueSize)
	case o.rangeMaxBytes < 1<<20:
		return nil, fmt.Errorf("-range-max-bytes %d: want at least 1 MiB", o.rangeMaxBytes)
	case o.loadClients < 1 || o.loadClients > 1024:
		return nil, fmt.Errorf("-load-clients %d: want 1 to 1024", o.loadClients)
	case o.probeRate <= 0 || o.probeRate > 10000:
		return nil, fmt.Errorf("-probe-rate %v: want more than 0 and at most 10000 puts/s", o.probeRate)
	case o.slow < 0 || o.slow > time.Hour:
		return nil, fmt.Errorf("-slow %v: want 0 to 1h", o.slow)
	case o.probeValue < 0 || o.probeValue > 1<<20:
		return nil, fmt.Errorf("-probe-value-size %d: want 0 to 1048576", o.probeValue)
	case o.baseline < time.Second || o.baseline > time.Hour:
		return nil, fmt.Errorf("-baseline %v: want 1s to 1h", o.baseline)
	case o.hold < 0 || o.hold > time.Hour:
		return nil, fmt.Errorf("-hold %v: want 0 to 1h", o.hold)
	case o.quiet < time.Second || o.quiet > time.Hour:
		return nil, fmt.Errorf("-quiet %v: want 1s to 1h", o.quiet)
	case o.timeout <= 0 || o.timeout > 24*time.Hour:
		return nil, fmt.Errorf("-timeout %v: want a positive duration up to 24h", o.timeout)
	case o.settleTimeout <= 0 || o.settleTimeout > 24*time.Hour:
		return nil, fmt.Errorf("-settle-timeout %v: want a positive duration up to 24h", o.settleTimeout)
	case o.minFreeMiB < 0:
		return nil, fmt.Errorf("-min-free-mib %d is negative", o.minFreeMiB)
	case o.portBase != 0 && (o.portBase < 1024 || o.portBase+10*cluster.MaxNodes+2 > 32767):
		return nil, fmt.Errorf("-port-base %d: want 1024 to %d, so every port stays below 32768", o.portBase, 32767-10*cluster.MaxNodes-2)
	}
	return o, nil
}

// parseSize parses a byte count: a whole number with an optional unit B,
// KiB, MiB or GiB (also K, M, G, KB, MB, GB, all powers of 1024), e.g.
// "1GiB", "64MiB", "4096".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a positive whole number of bytes with an optional unit (KiB, MiB, GiB)", s)
	}
	var shift uint
	switch strings.ToLower(unit) {
	case "", "b":
	case "k", "kb", "kib":
		shift = 10
	case "m", "mb", "mib":
		shift = 20
	case "g", "gb", "gib":
		shift = 30
	default:
		return 0, fmt.Errorf("%q: unknown unit %q (want B, KiB, MiB or GiB)", s, unit)
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}
