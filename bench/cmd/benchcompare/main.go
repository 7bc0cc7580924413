// Command benchcompare compares dialkv with etcd on this machine. It starts
// a 3-node dialkv (`kvd serve` processes) and a 3-member etcd (etcdnode
// processes) on 127.0.0.1, both fsyncing every write, loads the same key
// space into both, then runs each workload against each system in
// alternation (dialkv, etcd, dialkv, etcd, ...) with kvbench, so that drift
// of the machine over time hits both alike. It prints a table of every run,
// a summary, and one line per workload:
//
//	RATIO <workload> <dialkv ops/s / etcd ops/s> p99 <dialkv ms> vs <etcd ms>
//
// The -r16 workloads run on dialkv after its key space has been split into
// 16 ranges at evenly spaced keys of the workload's key space, with the
// ranges' leaders balanced over the nodes (at most one apart); etcd runs
// them unchanged. They run after every single-range workload, and for each
// the summary adds a line comparing dialkv with itself on one range:
//
//	SCALE <workload>/<single-range workload> <ops/s ratio> p99 <ms> vs <ms>
//
// The transaction workloads put 2 (4) keys per transaction if the first
// still holds what the client last wrote there, each client on keys of
// its own: txn-c64 in one range on dialkv, against etcd's Txn; txn-c64-x2
// and txn-c64-x4 on the 16 ranges, 2 (4) of them per transaction, on
// dialkv alone, each giving a line
//
//	WORKLOAD <workload> ops/s <n> p50 <ms> p99 <ms> errors <n> compare_failed <n>
//
// After them comes what each operation cost, per workload and system, the
// rounds merged: the three servers' CPU (all, and the busiest one's), the
// load generator's, the machine's context switches, the servers' fsyncs and
// bytes sent to peers, and for dialkv its link's messages (from the
// servers' /metrics):
//
//	COST <workload> <system> server_cpu_us <µs/op> busiest_server_cpu_us <µs/op> bench_cpu_us <µs/op> context_switches <n/op> fsyncs <n/op> peer_bytes <B/op> [messages <n/op> bytes_per_message <B> messages_per_write <n> records_per_fsync <n>]
//
// On a machine where the servers and the load generator share the cores,
// ops/s follows the inverse of the CPU per operation; the COST lines say
// where a RATIO comes from.
//
// With -memory it instead loads -memory-keys keys into each system in turn
// and reports each server process's peak RSS (VmHWM).
//
// It builds nothing: kvd, kvbench and etcdnode are looked up next to its
// own binary unless given (`make bench-build` puts them all in bin/). It
// stops every process it started, by PID, and removes its data directory.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
)

type options struct {
	kvd, kvbench, etcdnode string
	workDir                string
	keep                   bool
	portBase               int
	duration               time.Duration
	clients, conns         int
	valueSize, keys        int
	rounds                 int
	workloads              []string
	jsonOut                string
	memory                 bool
	memoryKeys             int
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
		fmt.Fprintln(stderr, "benchcompare:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dir, err := cluster.WorkDir(o.workDir, "benchcompare")
	if err != nil {
		fmt.Fprintln(stderr, "benchcompare:", err)
		return 1
	}
	b := &bench{o: o, dir: dir, out: stdout, log: stderr}
	if o.memory {
		err = b.memory(ctx)
	} else {
		err = b.compare(ctx)
	}
	// Every cluster has been stopped by now (compare and memory stop what
	// they start on every path); only the data is left.
	if o.keep {
		fmt.Fprintf(stderr, "benchcompare: data and logs kept in %s\n", dir)
	} else if rerr := os.RemoveAll(dir); rerr != nil {
		fmt.Fprintln(stderr, "benchcompare: remove", dir, rerr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "benchcompare:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("benchcompare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var workloads string
	fs.StringVar(&o.kvd, "kvd", "", "kvd binary (default: next to this binary)")
	fs.StringVar(&o.kvbench, "kvbench", "", "kvbench binary (default: next to this binary)")
	fs.StringVar(&o.etcdnode, "etcdnode", "", "etcdnode binary (default: next to this binary)")
	fs.StringVar(&o.workDir, "work-dir", "", "parent of the servers' data and logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the data and logs instead of removing them")
	fs.IntVar(&o.portBase, "port-base", 27000, "dialkv node i uses port-base+10i..+2, etcd member i port-base+100+10i..+1")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each run")
	fs.IntVar(&o.clients, "clients", 64, "clients of the -c64 workloads")
	fs.IntVar(&o.conns, "conns", 1, "client connections per kvbench run, for both systems")
	fs.IntVar(&o.valueSize, "value-size", 256, "bytes per value")
	fs.IntVar(&o.keys, "keys", 10000, "key space, loaded into both systems before the runs")
	fs.IntVar(&o.rounds, "rounds", 2, "runs of each workload against each system")
	fs.StringVar(&workloads, "workloads", strings.Join(workloadNames(), ","), "comma-separated subset of the workloads to run")
	fs.StringVar(&o.jsonOut, "json", "", "also write every run's result and the summary as JSON to this file")
	fs.BoolVar(&o.memory, "memory", false, "measure peak RSS after loading -memory-keys keys instead of comparing throughput")
	fs.IntVar(&o.memoryKeys, "memory-keys", 1000000, "keys loaded by -memory")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, b := range []struct {
		path *string
		name string
	}{{&o.kvd, "kvd"}, {&o.kvbench, "kvbench"}, {&o.etcdnode, "etcdnode"}} {
		var err error
		if *b.path, err = cluster.Binary(*b.path, b.name, "run `make build bench-build`"); err != nil {
			return nil, err
		}
	}
	maxRanges, txnKeys := 1, 0
	for _, w := range strings.Split(workloads, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		spec, ok := findWorkload(w)
		if !ok {
			return nil, fmt.Errorf("-workloads: unknown %q (want some of %s)", w, strings.Join(workloadNames(), ", "))
		}
		o.workloads = append(o.workloads, w)
		maxRanges = max(maxRanges, spec.ranges)
		txnKeys = max(txnKeys, spec.txnKeys)
	}
	// Splitting dialkv's key space cannot be undone: the workloads on
	// fewer ranges run first, whatever order they were given in.
	slices.SortStableFunc(o.workloads, func(a, b string) int {
		sa, _ := findWorkload(a)
		sb, _ := findWorkload(b)
		return cmp.Compare(sa.ranges, sb.ranges)
	})
	if o.keys < maxRanges {
		return nil, fmt.Errorf("-keys %d: the -r%d workloads need at least one key per range", o.keys, maxRanges)
	}
	if o.keys < txnKeys*o.clients {
		return nil, fmt.Errorf("-keys %d: the txn workloads give each of -clients %d clients %d keys of its own", o.keys, o.clients, txnKeys)
	}
	switch {
	case len(o.workloads) == 0 && !o.memory:
		return nil, errors.New("-workloads: none given")
	case o.duration <= 0 || o.duration > time.Hour:
		return nil, fmt.Errorf("-duration %v: want a positive duration up to 1h", o.duration)
	case o.clients < 1 || o.conns < 1 || o.conns > o.clients:
		return nil, fmt.Errorf("-clients %d, -conns %d: want 1 <= conns <= clients", o.clients, o.conns)
	case o.valueSize < 0 || o.keys < 1 || o.memoryKeys < 1:
		return nil, errors.New("-value-size, -keys and -memory-keys must be positive")
	case o.rounds < 1 || o.rounds > 100:
		return nil, fmt.Errorf("-rounds %d: want 1 to 100", o.rounds)
	case o.portBase < 1024 || o.portBase+200 > 65535:
		return nil, fmt.Errorf("-port-base %d: out of range", o.portBase)
	}
	return o, nil
}
