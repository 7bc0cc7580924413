// Command rangebench measures what hosting many ranges costs a dialkv
// node. For each range count N of -ranges (default 10,100,1000) it
//
//  1. starts a fresh 3-node cluster (`kvd serve` processes, fsync on) on
//     127.0.0.1 in a temporary directory,
//  2. splits the key space into N ranges by hand (client SplitRange, in
//     parallel across ranges, see splitPlan), reports how long that took,
//     and waits until every range has a leader,
//  3. after -settle, measures the idle cluster over -idle: CPU time of
//     every node process (/proc/PID/stat) as % of one core, and its
//     resident memory (VmRSS, VmHWM in /proc/PID/status),
//  4. runs -clients closed-loop clients putting -value-size-byte values
//     on keys spread uniformly over all N ranges for -duration, and reports
//     puts/s and latency percentiles,
//  5. stops every process it started, by PID, and goes on to the next N.
//
// It prints progress to stderr, then one table row per N to stdout, and
// with -json also writes the rows to a file. A range count that fails is
// reported as a row with its error (and the nodes' log tails on stderr);
// the other counts still run. Exit code 0 when every count ran, 1 when one
// failed or the run was interrupted, 2 for bad flags.
//
// It builds nothing: kvd is looked up next to its own binary unless given
// (`make bench-ranges` builds both into bin/).
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

// maxRanges bounds -ranges: the key space must give every range keys.
const maxRanges = 100_000

type options struct {
	kvd          string
	ranges       []int
	workDir      string
	keep         bool
	portBase     int
	logLevel     string
	settle, idle time.Duration
	duration     time.Duration
	clients      int
	conns        int
	valueSize    int
	splitWorkers int
	setupTimeout time.Duration
	jsonOut      string
	maxDiskMiB   int64
	minFreeMiB   int64
	kvdArgs      []string
}

type bench struct {
	o        *options
	dir      string
	out, log io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "rangebench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := cluster.WorkDir(o.workDir, "rangebench")
	if err != nil {
		fmt.Fprintln(stderr, "rangebench:", err)
		return 1
	}
	b := &bench{o: o, dir: dir, out: stdout, log: stderr}
	rep := &report{
		Started:  time.Now().UTC().Format(time.RFC3339),
		Host:     hostInfo(),
		Settings: o.settings(),
	}
	fmt.Fprintf(stderr, "rangebench: ranges %v, data under %s, %d cores, load average %s\n", o.ranges, dir, rep.Host.Cores, cluster.LoadAvg())
	failed := false
	for _, n := range o.ranges {
		// Every run stops its cluster, by PID, before it returns.
		r, err := b.runOne(ctx, n)
		if err != nil {
			failed = true
			r.Error = err.Error()
			fmt.Fprintf(stderr, "rangebench: %d ranges: %v\n", n, err)
		}
		rep.Rows = append(rep.Rows, r)
		if errors.Is(err, errInterrupted) {
			break
		}
	}
	rep.LoadAvgEnd = cluster.LoadAvg()
	rep.writeTable(stdout)
	if o.jsonOut != "" {
		if err := rep.writeJSON(o.jsonOut); err != nil {
			fmt.Fprintln(stderr, "rangebench:", err)
			failed = true
		}
	}
	switch {
	case o.keep || failed:
		fmt.Fprintf(stderr, "rangebench: data and logs kept in %s\n", dir)
	default:
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(stderr, "rangebench: remove", dir, err)
		}
	}
	if failed {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("rangebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ranges string
	fs.StringVar(&o.kvd, "kvd", "", "kvd binary (default: next to this binary)")
	fs.StringVar(&ranges, "ranges", "10,100,1000", "comma-separated range counts, one fresh cluster each")
	fs.StringVar(&o.workDir, "work-dir", "", "parent of the nodes' data and logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep data and logs (they are always kept for a range count that failed)")
	fs.IntVar(&o.portBase, "port-base", 0, "node i uses port-base+10i..+2 on 127.0.0.1; 0 picks a free base below 32768 (cluster.FreePortBase)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "kvd --log-level")
	var kvdArgs string
	fs.StringVar(&kvdArgs, "kvd-args", "", "more kvd serve flags, space-separated, e.g. \"--hibernate-after 5s\"")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "wait after every range has a leader, before the idle window")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle measurement window")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of the write run")
	fs.IntVar(&o.clients, "clients", 64, "closed-loop clients of the write run")
	fs.IntVar(&o.conns, "conns", 1, "client connections (client objects) the writers are spread over")
	fs.IntVar(&o.valueSize, "value-size", 256, "bytes per written value")
	fs.IntVar(&o.splitWorkers, "split-workers", 16, "ranges split in parallel while creating the ranges")
	fs.DurationVar(&o.setupTimeout, "setup-timeout", 15*time.Minute, "bound of creating the ranges and waiting for their leaders, per range count")
	fs.StringVar(&o.jsonOut, "json", "", "also write the rows as JSON to this file")
	fs.Int64Var(&o.maxDiskMiB, "max-disk-mib", 4096, "stop a range count whose nodes' data grows past this many MiB (its data is removed, its logs kept)")
	fs.Int64Var(&o.minFreeMiB, "min-free-mib", 5120, "stop a range count when the file system of -work-dir has less than this many MiB free")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.kvdArgs = strings.Fields(kvdArgs)
	var err error
	if o.ranges, err = parseRanges(ranges); err != nil {
		return nil, err
	}
	if o.kvd, err = cluster.Binary(o.kvd, "kvd", "run `make build`, or pass -kvd"); err != nil {
		return nil, err
	}
	switch {
	case o.settle < 0 || o.settle > time.Hour:
		return nil, fmt.Errorf("-settle %v: want 0 to 1h", o.settle)
	case o.idle < time.Second || o.idle > time.Hour:
		return nil, fmt.Errorf("-idle %v: want 1s to 1h", o.idle)
	case o.duration <= 0 || o.duration > time.Hour:
		return nil, fmt.Errorf("-duration %v: want a positive duration up to 1h", o.duration)
	case o.setupTimeout <= 0 || o.setupTimeout > 24*time.Hour:
		return nil, fmt.Errorf("-setup-timeout %v: want a positive duration up to 24h", o.setupTimeout)
	case o.clients < 1 || o.conns < 1 || o.conns > o.clients:
		return nil, fmt.Errorf("-clients %d, -conns %d: want 1 <= conns <= clients", o.clients, o.conns)
	case o.valueSize < 0:
		return nil, fmt.Errorf("-value-size %d is negative", o.valueSize)
	case o.splitWorkers < 1 || o.splitWorkers > 1000:
		return nil, fmt.Errorf("-split-workers %d: want 1 to 1000", o.splitWorkers)
	case o.maxDiskMiB < 1 || o.minFreeMiB < 0:
		return nil, fmt.Errorf("-max-disk-mib %d, -min-free-mib %d: want a positive limit and a non-negative reserve", o.maxDiskMiB, o.minFreeMiB)
	case o.portBase != 0 && (o.portBase < 1024 || o.portBase+100 > 65535):
		return nil, fmt.Errorf("-port-base %d: out of range", o.portBase)
	}
	return o, nil
}

// parseRanges parses "10,100,1000".
func parseRanges(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n < 1 || n > maxRanges {
			return nil, fmt.Errorf("-ranges: %q: want a count from 1 to %d", f, maxRanges)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("-ranges: none given")
	}
	return out, nil
}
