package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
)

// memoryRow is one server process's memory after the load.
type memoryRow struct {
	System    string  `json:"system"`
	Member    string  `json:"member"`
	PID       int     `json:"pid"`
	IdleRSS   int64   `json:"idle_peak_rss_bytes"`
	PeakRSS   int64   `json:"peak_rss_bytes"`
	RSS       int64   `json:"rss_bytes"`
	LoadSec   float64 `json:"load_s"`
	LoadRate  float64 `json:"load_puts_per_sec"`
	KeysTotal int     `json:"keys"`
}

// memory loads -memory-keys keys into each system in turn, each on a
// fresh cluster with nothing else running, and reads every server's peak
// RSS (VmHWM in /proc/PID/status) before and after.
func (b *bench) memory(ctx context.Context) error {
	var rows []memoryRow
	for _, s := range systems {
		r, err := b.memoryOf(ctx, s)
		if err != nil {
			return err
		}
		rows = append(rows, r...)
	}
	const mib = 1 << 20
	fmt.Fprintf(b.out, "\nPeak RSS after loading %d keys of %d bytes (%d MiB of values) with %d clients\n",
		b.o.memoryKeys, b.o.valueSize, int64(b.o.memoryKeys)*int64(b.o.valueSize)/mib, b.o.clients)
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "system\tmember\tpid\tidle peak MiB\tpeak RSS MiB\tRSS now MiB\tload s\tputs/s")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\n", r.System, r.Member, r.PID,
			float64(r.IdleRSS)/mib, float64(r.PeakRSS)/mib, float64(r.RSS)/mib, r.LoadSec, r.LoadRate)
	}
	tw.Flush()
	fmt.Fprintln(b.out)
	for _, r := range rows {
		fmt.Fprintf(b.out, "MEMORY %s %s peak_rss_mib %.1f\n", r.System, r.Member, float64(r.PeakRSS)/mib)
	}
	if b.o.jsonOut != "" {
		return writeJSON(b.o.jsonOut, map[string]any{"memory": rows})
	}
	return nil
}

func (b *bench) memoryOf(ctx context.Context, system string) ([]memoryRow, error) {
	c, err := b.startSystem(ctx, system)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", system, err)
	}
	defer b.stopSystem(c)
	idle := make([]cluster.Memory, len(c.Procs))
	for i, p := range c.Procs {
		if idle[i], err = p.Memory(); err != nil {
			return nil, err
		}
	}
	res, err := b.load(ctx, c, b.o.memoryKeys)
	if err != nil {
		return nil, err
	}
	if l, err := c.Leader(ctx); err == nil {
		fmt.Fprintf(b.log, "%s leader %s (first endpoint %s)\n", system, l, c.Procs[0].Name)
	}
	// Let the servers finish applying on followers before reading.
	select {
	case <-ctx.Done():
		return nil, errInterrupted
	case <-time.After(2 * time.Second):
	}
	var rows []memoryRow
	for i, p := range c.Procs {
		m, err := p.Memory()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", system, p.Name, err)
		}
		rows = append(rows, memoryRow{System: system, Member: p.Name, PID: p.PID(),
			IdleRSS: idle[i].PeakRSS, PeakRSS: m.PeakRSS, RSS: m.RSS,
			LoadSec: res.ElapsedSec, LoadRate: res.Total.OpsPerSec, KeysTotal: b.o.memoryKeys})
	}
	return rows, nil
}
