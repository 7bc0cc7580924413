// Command kvbench is a closed-loop load generator for dialkv and, for
// comparison, etcd. It runs one workload (put, get, mixed, load or txn) with a
// number of clients over a number of connections and reports ops/s,
// latency percentiles and errors, as a table or as JSON (-json).
//
//	kvbench -system dialkv -endpoints 127.0.0.1:7010 -workload load -keys 10000
//	kvbench -system dialkv -workload get -consistency stale -clients 64 -duration 10s
//	kvbench -system etcd -endpoints 127.0.0.1:2379 -workload mixed -read-ratio 0.95 -zipf 0.99
//	kvbench -system dialkv -workload txn -txn-keys 4 -clients 64
//
// Exit codes: 0 the run happened (read its error counts), 1 it could not
// start or finish, 2 bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/driver/dialkv"
	"github.com/dialkv/dialkv/bench/driver/etcd"
	"github.com/dialkv/dialkv/bench/workload"
)

// countedCap bounds a run that is meant to stop at a count (-ops or the
// load workload) when -duration is not given.
const countedCap = time.Hour

// Default endpoints: those of `make run` and of a stock etcd.
var defaultEndpoints = map[string]string{
	"dialkv": "127.0.0.1:7010,127.0.0.1:7020,127.0.0.1:7030",
	"etcd":   "127.0.0.1:2379",
}

type options struct {
	system, endpoints string
	conns             int
	maxStaleness      time.Duration
	json              bool
	cpuProfile        string
	cfg               workload.Config
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "kvbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	stopProfile, err := cluster.StartCPUProfile(opts.cpuProfile, stderr, "kvbench")
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	defer stopProfile()
	res, err := bench(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	if opts.json {
		err = res.WriteJSON(stdout)
	} else {
		err = res.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{cfg: workload.DefaultConfig()}
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kind, level string
	fs.StringVar(&o.system, "system", "dialkv", "system under test: dialkv or etcd")
	fs.StringVar(&o.endpoints, "endpoints", "", "comma-separated host:port client endpoints (default: `make run`'s for dialkv, 127.0.0.1:2379 for etcd)")
	fs.StringVar(&kind, "workload", string(workload.Put), "put, get, mixed, load (write every key once), or txn (compare a key, put -txn-keys keys)")
	fs.StringVar(&level, "consistency", string(workload.Linearizable), "read level: linearizable, stale, bounded or session (etcd: linearizable|l or stale|s)")
	fs.DurationVar(&o.maxStaleness, "max-staleness", time.Second, "staleness bound of bounded reads")
	fs.Float64Var(&o.cfg.ReadRatio, "read-ratio", workload.DefaultReadRatio, "fraction of gets in the mixed workload (0.5 = 50/50, 0.95 = 95/5)")
	fs.IntVar(&o.cfg.TxnKeys, "txn-keys", workload.DefaultTxnKeys, "keys each txn transaction puts, one in each of that many equal stripes of the key space")
	fs.IntVar(&o.cfg.Clients, "clients", workload.DefaultClients, "concurrent closed-loop clients")
	fs.IntVar(&o.conns, "conns", 1, "client connections (client objects) the clients are spread over")
	fs.IntVar(&o.cfg.Keys, "keys", workload.DefaultKeys, "size of the key space")
	fs.StringVar(&o.cfg.KeyPrefix, "key-prefix", workload.DefaultKeyPrefix, "prefix of every key")
	fs.IntVar(&o.cfg.ValueSize, "value-size", workload.DefaultValueSize, "bytes per written value")
	fs.Float64Var(&o.cfg.Zipf, "zipf", 0, "zipfian skew theta in (0,1), e.g. 0.99; 0 picks keys uniformly")
	fs.DurationVar(&o.cfg.Duration, "duration", workload.DefaultDuration, "run length; with -ops or -workload load, a cap (default 1h there)")
	fs.Int64Var(&o.cfg.Ops, "ops", 0, "stop after this many operations (0: run for -duration)")
	fs.DurationVar(&o.cfg.OpTimeout, "op-timeout", workload.DefaultOpTimeout, "timeout of each operation")
	fs.Int64Var(&o.cfg.Seed, "seed", 1, "seed of the key choices")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of kvbench itself (the client side) to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.cfg.Workload, err = workload.ParseKind(kind); err != nil {
		return nil, err
	}
	if o.cfg.Level, err = workload.ParseLevel(level); err != nil {
		return nil, err
	}
	if _, ok := defaultEndpoints[o.system]; !ok {
		return nil, fmt.Errorf("-system %q: want dialkv or etcd", o.system)
	}
	if o.endpoints == "" {
		o.endpoints = defaultEndpoints[o.system]
	}
	if o.system == "etcd" && o.cfg.Level != workload.Linearizable && o.cfg.Level != workload.Stale {
		return nil, fmt.Errorf("-consistency %s: etcd has linearizable (l) and stale (s) reads only", o.cfg.Level)
	}
	if o.conns < 1 || o.conns > o.cfg.Clients {
		return nil, fmt.Errorf("-conns %d: want between 1 and -clients (%d)", o.conns, o.cfg.Clients)
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if !durationSet && (o.cfg.Ops > 0 || o.cfg.Workload == workload.Load) {
		o.cfg.Duration = countedCap
	}
	return o, o.cfg.Validate()
}

func bench(ctx context.Context, o *options) (res *workload.Result, err error) {
	var eps []string
	for _, ep := range strings.Split(o.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	drivers := make([]workload.Driver, 0, o.conns)
	defer func() {
		for _, d := range drivers {
			if cerr := d.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close: %w", cerr)
			}
		}
	}()
	for range o.conns {
		var d workload.Driver
		var err error
		switch o.system {
		case "dialkv":
			d, err = dialkv.New(dialkv.Options{Endpoints: eps, MaxStaleness: o.maxStaleness})
		case "etcd":
			d, err = etcd.New(eps)
		}
		if err != nil {
			return nil, fmt.Errorf("connect to %s at %s: %w", o.system, o.endpoints, err)
		}
		drivers = append(drivers, d)
	}
	res, err = workload.Run(ctx, o.cfg, drivers)
	if err != nil {
		return nil, err
	}
	res.System = o.system
	return res, nil
}
