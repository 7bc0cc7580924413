package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/dialkv/dialkv/bench/workload"
)

// runRecord is one kvbench run of the comparison.
type runRecord struct {
	Workload string           `json:"workload"`
	Round    int              `json:"round"`
	System   string           `json:"system"`
	Result   *workload.Result `json:"result"`
	// Cost is nil when the servers could not be sampled (see -json).
	Cost *runCost `json:"cost,omitempty"`
}

// summaryRow merges every round of one workload, per system.
type summaryRow struct {
	Workload string                    `json:"workload"`
	Systems  map[string]workload.Stats `json:"systems"`
	// Ratio is dialkv ops/s over etcd ops/s; NaN (and absent from JSON)
	// when etcd did nothing.
	Ratio     float64  `json:"-"`
	RatioJSON *float64 `json:"ratio,omitempty"`
}

// compare runs the throughput comparison: start both systems, load both,
// then every workload, round by round, system by system.
func (b *bench) compare(ctx context.Context) error {
	clusters, stopAll, err := b.startBoth(ctx)
	if err != nil {
		return err
	}
	defer stopAll()
	for _, s := range systems {
		if _, err := b.load(ctx, clusters[s], b.o.keys); err != nil {
			return err
		}
	}

	before := b.leaders(ctx, clusters)
	fmt.Fprintln(b.log, before)

	var runs []runRecord
	var setup *rangeSetup
	total := 0
	for _, name := range b.o.workloads {
		spec, _ := findWorkload(name)
		total += b.o.rounds * len(spec.systemsOf())
	}
	for _, name := range b.o.workloads {
		spec, _ := findWorkload(name)
		if spec.ranges > 1 && setup == nil {
			if setup, err = b.splitDialkv(ctx, clusters["dialkv"], spec.ranges); err != nil {
				if ctx.Err() != nil {
					return errInterrupted
				}
				return err
			}
		}
		for round := 1; round <= b.o.rounds; round++ {
			for _, s := range spec.systemsOf() {
				if ctx.Err() != nil {
					return errInterrupted
				}
				c := clusters[s]
				args := append(spec.args(b.o.clients),
					"-keys", strconv.Itoa(b.o.keys),
					"-duration", b.o.duration.String(),
					// The same seed for both systems of a round: the
					// same key sequences.
					"-seed", strconv.Itoa(round))
				done, serr := sampleCost(ctx, c)
				res, benchCPU, err := b.kvbench(ctx, c, b.o.duration+runSlack, args...)
				if err != nil {
					return err
				}
				rec := runRecord{Workload: name, Round: round, System: s, Result: res}
				if serr == nil {
					rec.Cost, serr = done(benchCPU)
				}
				if serr != nil {
					// A cost is extra: the run's throughput stands without it.
					fmt.Fprintf(b.log, "%s round %d %s: no cost figures: %v\n", name, round, s, serr)
				}
				runs = append(runs, rec)
				fmt.Fprintf(b.log, "[%d/%d] %-21s round %d %-6s %9.0f ops/s  p99 %8.3f ms  errors %d\n",
					len(runs), total, name, round, s, res.Total.OpsPerSec, res.Total.P99Ms, res.Total.Errors)
				if err := checkAlive(c); err != nil {
					return err
				}
			}
		}
	}
	rows, err := summarize(b.o.workloads, runs)
	if err != nil {
		return err
	}
	after := b.leaders(ctx, clusters)
	if setup != nil {
		setup.LayoutAfter = b.dialkvLayout(ctx, clusters["dialkv"])
	}
	b.printRuns(runs)
	fmt.Fprintf(b.out, "Leaders before the runs: %s\n", before)
	if after != before {
		fmt.Fprintf(b.out, "Leaders after the runs:  %s\n", after)
	}
	if setup != nil {
		setup.print(b.out)
	}
	b.printSummary(rows)
	costs := costRows(b.o.workloads, runs)
	b.printCosts(costs)
	if b.o.jsonOut != "" {
		out := map[string]any{"runs": runs, "summary": rows, "scale": scaleRows(rows), "costs": costs}
		if setup != nil {
			out["ranges_setup"] = setup
		}
		if err := writeJSON(b.o.jsonOut, out); err != nil {
			return err
		}
	}
	var errs int64
	for _, r := range runs {
		errs += r.Result.Total.Errors
	}
	if errs > 0 {
		fmt.Fprintf(b.log, "WARNING: %d operations failed; see the errors column and -json for messages\n", errs)
	}
	return nil
}

// summarize merges the rounds of each workload and system: latency
// histograms are merged, ops/s is all operations over all run time.
func summarize(names []string, runs []runRecord) ([]summaryRow, error) {
	var rows []summaryRow
	for _, name := range names {
		row := summaryRow{Workload: name, Systems: map[string]workload.Stats{}}
		for _, s := range systems {
			h := workload.NewHistogram()
			var errs, misses, failed int64
			var elapsed time.Duration
			for _, r := range runs {
				if r.Workload != name || r.System != s {
					continue
				}
				rh, err := workload.DecodeHistogram(r.Result.Histogram)
				if err != nil {
					return nil, fmt.Errorf("%s %s round %d: histogram: %w", name, s, r.Round, err)
				}
				h.Merge(rh)
				errs += r.Result.Total.Errors
				misses += r.Result.Total.Misses
				failed += r.Result.Total.CompareFailed
				elapsed += r.Result.Elapsed()
			}
			st := workload.Summarize(h, errs, misses, elapsed)
			st.CompareFailed = failed
			row.Systems[s] = st
		}
		row.Ratio = math.NaN()
		if e := row.Systems["etcd"].OpsPerSec; e > 0 {
			row.Ratio = row.Systems["dialkv"].OpsPerSec / e
			row.RatioJSON = &row.Ratio
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (b *bench) printRuns(runs []runRecord) {
	fmt.Fprintf(b.out, "\nRuns (%v each, %d-byte values, %d keys, %d connection(s) per run; dialkv and etcd alternate)\n",
		b.o.duration, b.o.valueSize, b.o.keys, b.o.conns)
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tround\tsystem\tclients\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\tcompare failed")
	for _, r := range runs {
		t := r.Result.Total
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\n",
			r.Workload, r.Round, r.System, r.Result.Clients, t.OpsPerSec, t.P50Ms, t.P90Ms, t.P99Ms, t.MaxMs, t.Errors, t.CompareFailed)
	}
	tw.Flush()
}

func (b *bench) printSummary(rows []summaryRow) {
	fmt.Fprintf(b.out, "\nSummary (%d rounds merged per system)\n", b.o.rounds)
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tdialkv ops/s\tetcd ops/s\tratio\tdialkv p50\tetcd p50\tdialkv p99\tetcd p99\tdialkv max\tetcd max\terrors d/e")
	for _, r := range rows {
		d, e := r.Systems["dialkv"], r.Systems["etcd"]
		if spec, _ := findWorkload(r.Workload); spec.dialkvOnly {
			fmt.Fprintf(tw, "%s\t%.0f\t-\t-\t%.3f\t-\t%.3f\t-\t%.3f\t-\t%d/-\n",
				r.Workload, d.OpsPerSec, d.P50Ms, d.P99Ms, d.MaxMs, d.Errors)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d/%d\n",
			r.Workload, d.OpsPerSec, e.OpsPerSec, r.Ratio, d.P50Ms, e.P50Ms, d.P99Ms, e.P99Ms, d.MaxMs, e.MaxMs, d.Errors, e.Errors)
	}
	tw.Flush()
	fmt.Fprintln(b.out)
	for _, r := range rows {
		if spec, _ := findWorkload(r.Workload); spec.dialkvOnly {
			continue
		}
		fmt.Fprintf(b.out, "RATIO %s %.3f p99 %.3f vs %.3f\n",
			r.Workload, r.Ratio, r.Systems["dialkv"].P99Ms, r.Systems["etcd"].P99Ms)
	}
	for _, r := range rows {
		if spec, _ := findWorkload(r.Workload); spec.dialkvOnly {
			d := r.Systems["dialkv"]
			fmt.Fprintf(b.out, "WORKLOAD %s ops/s %.0f p50 %.3f p99 %.3f errors %d compare_failed %d\n",
				r.Workload, d.OpsPerSec, d.P50Ms, d.P99Ms, d.Errors, d.CompareFailed)
		}
	}
	for _, s := range scaleRows(rows) {
		fmt.Fprintf(b.out, "SCALE %s/%s %.3f p99 %.3f vs %.3f\n", s.Workload, s.Base, s.Ratio, s.P99Ms, s.BaseP99Ms)
	}
}

// scaleRow compares dialkv on many ranges with dialkv on one, for the
// same workload in the same run.
type scaleRow struct {
	Workload  string  `json:"workload"`
	Base      string  `json:"base"`
	Ratio     float64 `json:"ratio"` // ops/s of Workload over ops/s of Base
	P99Ms     float64 `json:"p99_ms"`
	BaseP99Ms float64 `json:"base_p99_ms"`
}

// scaleRows returns a row for every multi-range workload whose
// single-range base ran too and did some work.
func scaleRows(rows []summaryRow) []scaleRow {
	var out []scaleRow
	for _, r := range rows {
		spec, _ := findWorkload(r.Workload)
		if spec.base == "" {
			continue
		}
		for _, b := range rows {
			base := b.Systems["dialkv"]
			if b.Workload != spec.base || base.OpsPerSec <= 0 {
				continue
			}
			d := r.Systems["dialkv"]
			out = append(out, scaleRow{Workload: r.Workload, Base: b.Workload,
				Ratio: d.OpsPerSec / base.OpsPerSec, P99Ms: d.P99Ms, BaseP99Ms: base.P99Ms})
		}
	}
	return out
}

func writeJSON(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
