package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/dialkv/dialkv/api/client"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/layout"
	"github.com/dialkv/dialkv/bench/workload"
)

// rangeSetupTimeout bounds splitting dialkv's key space and balancing the
// new ranges' leaders.
const rangeSetupTimeout = 5 * time.Minute

// routeWait bounds the wait for the routing table to catch up with the
// leaders after balancing; kvd publishes leaderships every 500 ms.
const routeWait = 30 * time.Second

// rangeSetup is how dialkv's key space was prepared for the multi-range
// workloads.
type rangeSetup struct {
	Ranges     int     `json:"ranges"`
	Splits     int     `json:"splits"`
	SplitSec   float64 `json:"split_s"`   // the splits, until every range had a leader
	BalanceSec float64 `json:"balance_s"` // moving leaderships until balanced
	// RouteSec is the wait after that until the routing table named
	// every leader: until then a client's requests for a range whose
	// hint lags are forwarded, which is not the steady state measured.
	RouteSec  float64 `json:"route_s"`
	Transfers int     `json:"transfers"`
	Failed    int     `json:"failed_transfers"`
	// Layout is the layout the runs started from, LayoutAfter the one
	// they left ("" when it could not be read).
	Layout      string `json:"layout"`
	LayoutAfter string `json:"layout_after,omitempty"`
}

// splitDialkv splits dialkv's key space into n ranges at evenly spaced
// keys of the workload key space (kvbench's default prefix, -keys
// indexes), waits until every range has a leader, then moves leaderships
// until every node leads within one of every other (16 ranges on 3
// nodes: 6/5/5), and until the routing table names those leaders. A key space larger than kvd's --range-max-bytes may
// already have been split by kvd at other keys: it then ends with more
// than n ranges, as the report shows.
func (b *bench) splitDialkv(ctx context.Context, c *cluster.Cluster, n int) (*rangeSetup, error) {
	ctx, cancel := context.WithTimeout(ctx, rangeSetupTimeout)
	defer cancel()
	cli, err := client.New(client.Config{Endpoints: c.Endpoints})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	keys, err := layout.SplitKeys(workload.DefaultKeyPrefix, b.o.keys, n)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	splits, err := layout.Split(ctx, cli, keys, b.log)
	if err != nil {
		return nil, fmt.Errorf("splitting dialkv into %d ranges (%d splits done): %w", n, splits, err)
	}
	// At least n: with a key space larger than --range-max-bytes, kvd has
	// split it itself already.
	if _, err := layout.Wait(ctx, cli, func(l *layout.Layout) bool { return len(l.Ranges) >= n && l.LeadersSettled() }); err != nil {
		return nil, fmt.Errorf("waiting for the leaders of dialkv's %d ranges: %w", n, err)
	}
	s := &rangeSetup{Ranges: n, Splits: splits, SplitSec: time.Since(began).Seconds()}
	bal, err := layout.BalanceLeaders(ctx, cli, b.log)
	s.BalanceSec, s.Transfers, s.Failed = bal.Elapsed.Seconds(), bal.Moves, bal.Failed
	if err != nil {
		return nil, fmt.Errorf("balancing the leaders of dialkv's %d ranges: %w", n, err)
	}
	routed := time.Now()
	rctx, cancel := context.WithTimeout(ctx, routeWait)
	l, err := layout.Wait(rctx, cli, (*layout.Layout).RoutingCurrent)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("waiting for dialkv's routing table to name the %d ranges' leaders: %w", n, err)
	}
	s.RouteSec = time.Since(routed).Seconds()
	if err := checkAlive(c); err != nil {
		return nil, err
	}
	s.Layout = l.String()
	fmt.Fprintf(b.log, "dialkv split for %d ranges (%d splits) in %.1fs, leaders balanced in %.2fs (%d transfers, %d failed), routing table current %.2fs later: %s\n",
		n, splits, s.SplitSec, s.BalanceSec, s.Transfers, s.Failed, s.RouteSec, s.Layout)
	return s, nil
}

// dialkvLayout reads dialkv's layout for the report, or says why not.
func (b *bench) dialkvLayout(ctx context.Context, c *cluster.Cluster) string {
	cli, err := client.New(client.Config{Endpoints: c.Endpoints})
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := layout.Read(ctx, cli)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return l.String()
}

func (s *rangeSetup) print(w io.Writer) {
	fmt.Fprintf(w, "dialkv before the -r%d runs: %s (split %.1fs, leaders balanced %.2fs, %d transfers); replicas r, leaders L\n",
		s.Ranges, s.Layout, s.SplitSec, s.BalanceSec, s.Transfers)
	if s.LayoutAfter != "" && s.LayoutAfter != s.Layout {
		fmt.Fprintf(w, "dialkv after the -r%d runs:  %s\n", s.Ranges, s.LayoutAfter)
	}
}
