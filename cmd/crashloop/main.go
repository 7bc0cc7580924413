// Command crashloop runs dialkv's crash loop (make crash-loop): a real kvd
// cluster with many ranges under writes, kill -9 of a random node every few
// seconds and a restart, then a check that every acknowledged write is in
// the final state, that no read returned a value nobody wrote, and that
// every range's replicas agree by digest at one applied index.
//
// It prints progress and, last, one summary line: cycles, kills,
// acknowledged writes checked, ranges compared, elapsed time and PASS or
// FAIL with the results folder. Exit status: 0 on PASS, 1 on FAIL, 2 on bad
// usage, 3 when the loop could not be set up.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	jepsen "github.com/dialkv/dialkv/jepsen-style-tests"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		cycles     = flag.Int("cycles", 100, "kill -9 and restart cycles")
		nodes      = flag.Int("nodes", 3, "cluster size")
		ranges     = flag.Int("ranges", 24, "least number of ranges taking writes (rounded up to a multiple of 3)")
		clients    = flag.Int("clients", 6, "concurrent writers")
		downMin    = flag.Duration("down-min", time.Second, "shortest time a killed node stays down")
		downMax    = flag.Duration("down-max", 4*time.Second, "longest time a killed node stays down")
		upMin      = flag.Duration("up-min", 500*time.Millisecond, "shortest time between the cluster being ready and the next kill")
		upMax      = flag.Duration("up-max", 2*time.Second, "longest time between the cluster being ready and the next kill")
		splitEvery = flag.Int("split-every", 5, "every N-th cycle kills a range's leader while it splits the range (negative: never)")
		majority   = flag.Int("majority-every", 4, "every N-th cycle kills a majority of the nodes at once (negative: never)")
		ready      = flag.Duration("ready-timeout", 30*time.Second, "how long the cluster may take to be ready after a restart")
		seed       = flag.Uint64("seed", 0, "seed of every random choice (0: from the clock; printed)")
		out        = flag.String("out", "", "results folder (default: a new folder under the system temp dir)")
		kvd        = flag.String("kvd", "", "kvd binary (default: build ./cmd/kvd from the module)")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: crashloop [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || *cycles < 1 || *nodes < 3 || *ranges < 3 || *clients < 1 || *splitEvery == 0 || *majority == 0 ||
		*downMin < 0 || *downMax < *downMin || *upMin < 0 || *upMax < *upMin || *ready <= 0 {
		flag.Usage()
		return 2
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	if *out == "" {
		*out = filepath.Join(os.TempDir(), "dialkv-crashloop", fmt.Sprintf("%s-seed%d", time.Now().UTC().Format("20060102-150405"), *seed))
	}
	if *kvd == "" {
		dir, err := os.MkdirTemp("", "dialkv-crashloop-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "crashloop:", err)
			return 3
		}
		defer os.RemoveAll(dir)
		if *kvd, _, err = jepsen.BuildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crashloop:", err)
			return 3
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := jepsen.CrashLoop(ctx, jepsen.CrashLoopConfig{
		KvdPath: *kvd, Out: *out, Cycles: *cycles, Nodes: *nodes, Ranges: *ranges, Clients: *clients,
		DownMin: *downMin, DownMax: *downMax, UpMin: *upMin, UpMax: *upMax, SplitEvery: *splitEvery, MajorityEvery: *majority,
		ReadyTimeout: *ready, Seed: *seed,
		Logf: func(format string, args ...any) {
			fmt.Printf("%7.1fs %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashloop: the loop could not be set up:", err)
		fmt.Printf("CRASH-LOOP ERROR: %v; partial results in %s\n", err, *out)
		return 3
	}
	fmt.Println(rep.SummaryLine())
	if !rep.Valid {
		return 1
	}
	return 0
}
