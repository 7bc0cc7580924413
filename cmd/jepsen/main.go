// Command jepsen runs dialkv's Jepsen-style suite: a real kvd cluster whose
// node-to-node links all go through fault-injecting proxies, concurrent
// clients recording every operation, a seeded nemesis schedule, and
// checkers for every consistency promise. See `make jepsen`.
//
// It prints progress, the checkers' verdicts and the availability per
// phase, and last a single verdict line naming the results folder. Exit
// status: 0 when every checker passed (with --canary: when the planted
// mislabelled reads were caught), 1 when not, 2 on bad usage, 3 when the
// run could not be carried out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	jepsen "github.com/dialkv/dialkv/jepsen-style-tests"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		nodes    = flag.Int("nodes", 5, "cluster size")
		duration = flag.Duration("duration", 10*time.Minute, "how long the workload and the nemeses run")
		nemesis  = flag.String("nemesis", "all", "comma list: partition (or partition-one, -leader, -halves, -bridge, -oneway, -reject), kill, pause, slow, membership, leader-transfer, split, auth-revoke (needs --tls), kill-coordinator (needs the bank or append workload), all (with --tls: and auth-revoke), none")
		seed     = flag.Uint64("seed", 0, "seed of every random choice (0: from the clock; printed)")
		out      = flag.String("out", "", "results folder (default: a new folder under the system temp dir)")
		clients  = flag.Int("clients", 0, "concurrent clients (default 2 per node)")
		canary   = flag.Bool("canary", false, "plant stale reads recorded as linearizable; succeed only if the checker catches them")
		kvd      = flag.String("kvd", "", "kvd binary (default: build ./cmd/kvd from the module)")
		known    = flag.String("known-issues", "", "comma list of known server bugs to tolerate by their exact signature: "+strings.Join(knownIssueNames(), ", ")+" (default: none)")
		recheck  = flag.String("recheck", "", "check a recorded history.jsonl again instead of running (no cluster)")
		linTime  = flag.Duration("linearizable-timeout", 60*time.Second, "how long porcupine may take per key")
		ranges   = flag.Int("ranges", 0, "pre-split the key space the workload touches into this many user ranges before it starts (0: one range)")
		withTLS  = flag.Bool("tls", false, "mutual TLS on every link and auth on: the clients run as user jepsen (role rw), the nemeses and final reads as root; adds the auth checker")
		loads    = flag.String("workloads", "register,watch,lease,bank,append", "comma list: register (registers, lists, sets, reads at every level), watch (writers and watchers under w/; the watch checker), lease (leases with keys under lease/, a watcher on them; the lease checker), bank (transfers between accounts under bank/ over 4 ranges, read-all transactions; the bank checker), append (transactions appending to and reading lists under list/, one range each; the append checker)")
		watchers = flag.Int("watchers", 2, "watchers on w/ (the watch workload)")
		bound    = flag.Duration("lease-expiry-bound", 3*time.Second, "how long past its TTL a lease not kept alive may live (faults move it later; see docs/jepsen.md)")
	)
	var maxBytes, retention sizeFlag
	flag.Var(&maxBytes, "range-max-bytes", "every kvd's --range-max-bytes (bytes, or with a unit: 16KiB, 4MiB), so that ranges also split as they grow (0: kvd's default)")
	flag.Var(&retention, "watch-retention-bytes", "every kvd's --watch-retention-bytes (bytes, or with a unit): small, ranges trim their change feeds during the run and resumes meet COMPACTED (0: kvd's default)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: jepsen [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || *nodes < 1 || *duration <= 0 || *linTime <= 0 || *ranges < 0 || *watchers < 1 || *bound <= 0 {
		flag.Usage()
		return 2
	}
	if *recheck != "" {
		return recheckHistory(*recheck, jepsen.CheckOptions{LinearizableTimeout: *linTime, KnownIssues: splitList(*known), LeaseExpiryBound: *bound})
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	if *out == "" {
		*out = filepath.Join(os.TempDir(), "dialkv-jepsen", fmt.Sprintf("%s-seed%d", time.Now().UTC().Format("20060102-150405"), *seed))
	}
	if *kvd == "" {
		dir, err := os.MkdirTemp("", "dialkv-jepsen-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "jepsen:", err)
			return 3
		}
		defer os.RemoveAll(dir)
		*kvd, _, err = jepsen.BuildBinaries(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "jepsen:", err)
			return 3
		}
	}
	workloads, err := jepsen.ParseWorkloads(splitList(*loads))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	kinds := splitList(*nemesis)
	if _, _, err := jepsen.ExpandNemeses(kinds); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if kinds == nil {
		kinds = []string{"none"}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	cfg := jepsen.Config{
		KvdPath: *kvd, Out: *out, Nodes: *nodes, Duration: *duration, Nemeses: kinds,
		Seed: *seed, Clients: *clients, Canary: *canary, KnownIssues: splitList(*known), LinearizableTimeout: *linTime,
		Ranges: *ranges, RangeMaxBytes: int64(maxBytes), TLS: *withTLS,
		Workloads: workloads, Watch: jepsen.WatchConfig{Watchers: *watchers, RetentionBytes: int64(retention)}, Lease: jepsen.LeaseConfig{ExpiryBound: *bound},
		Logf: func(format string, args ...any) {
			fmt.Printf("%7.1fs %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		},
	}
	rep, err := jepsen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen: the run failed:", err)
		fmt.Printf("JEPSEN ERROR: %v; partial results in %s\n", err, *out)
		return 3
	}
	fmt.Println(rep.VerdictLine())
	switch {
	case *canary && rep.Caught, !*canary && rep.Valid:
		return 0
	}
	return 1
}

// recheckHistory runs the history checkers on a recorded history again
// (the cluster-state checkers, replicas and crashes, need the run). Exit
// codes as for a run: 0 every checker passed, 1 not.
func recheckHistory(path string, opts jepsen.CheckOptions) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		return 3
	}
	defer f.Close()
	h, err := jepsen.ReadHistory(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jepsen:", err)
		return 3
	}
	ok := true
	for _, r := range jepsen.Check(h, opts) {
		fmt.Printf("%-14s %-7s checked %d; %s\n", r.Checker, r.Verdict, r.Checked, strings.Join(r.Notes, "; "))
		for _, v := range r.Violations {
			fmt.Printf("    %s: %s (ops %v)\n", v.Key, v.Msg, v.Ops)
		}
		if r.Failing() {
			ok = false
		}
	}
	if !ok {
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			out = append(out, k)
		}
	}
	return out
}

func knownIssueNames() []string {
	var out []string
	for k := range jepsen.KnownIssueDocs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
