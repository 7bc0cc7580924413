package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/dialkv/dialkv/bench/layout"
)

// report is one run's figures. Times are seconds from the moment the 4th
// node was started; -1 when not reached.
type report struct {
	Started        string  `json:"started"`
	SizeBytes      int64   `json:"size_bytes"`
	ValueSize      int     `json:"value_size"`
	Keys           int     `json:"keys"`
	RangeMaxBytes  int64   `json:"range_max_bytes"`
	ProbeRate      float64 `json:"probe_puts_per_sec"`
	ProbeValueSize int     `json:"probe_value_size"`

	LoadSec       float64 `json:"load_s"`
	LoadMiBPerSec float64 `json:"load_mib_per_s"`
	// SettleSec is from the end of the load until the ranges had settled
	// and their leaders were balanced over the 3 nodes.
	SettleSec float64   `json:"settle_s"`
	Ranges    int       `json:"ranges"`
	Before    []nodeRow `json:"before"`
	// MetaLeaderBefore and MetaLeader lead the meta range before and
	// after.
	MetaLeaderBefore string `json:"meta_leader_before"`
	MetaLeader       string `json:"meta_leader"`

	NewNode    string  `json:"new_node"`
	ReadySec   float64 `json:"ready_s"`
	ShareSec   float64 `json:"share_s"`
	LeadersSec float64 `json:"leaders_s"`
	// LeadershipsSec counts the meta range's leadership too.
	LeadershipsSec float64 `json:"leaderships_s"`
	// EndSec is when the rebalancing was over (see watched.end): the
	// end of the probe's "during" window.
	EndSec       float64   `json:"end_s"`
	NewReplicas  int       `json:"new_replicas"`
	NewLeaders   int       `json:"new_leaders"`
	NewDataMiB   float64   `json:"new_data_mib"`
	NewMiBPerSec float64   `json:"new_mib_per_s"` // NewDataMiB over ShareSec
	RangesAfter  int       `json:"ranges_after"`
	After        []nodeRow `json:"after"`

	ProbeBefore probeStats `json:"probe_before"`
	ProbeDuring probeStats `json:"probe_during"`
	SlowPuts    []slowPut  `json:"slow_puts,omitempty"` // with -slow
}

// nodeRow is one node's share of the ranges.
type nodeRow struct {
	ID       string  `json:"id"`
	Replicas int     `json:"replicas"`
	Leaders  int     `json:"leaders"`
	Hosted   int     `json:"hosted"`             // replicas its own Status lists
	DataMiB  float64 `json:"data_mib,omitempty"` // its data directory
}

func nodeRows(l *layout.Layout, dataMiB func(id string) float64) []nodeRow {
	var out []nodeRow
	for _, n := range l.Nodes {
		r := nodeRow{ID: n.ID, Replicas: n.Replicas, Leaders: n.Leaders, Hosted: n.Hosted}
		if dataMiB != nil {
			r.DataMiB = dataMiB(n.ID)
		}
		out = append(out, r)
	}
	return out
}

// p99Ratio is the probe's p99 during the rebalancing over its p99 before
// (0 when either is missing).
func (r *report) p99Ratio() float64 {
	if r.ProbeBefore.P99Ms <= 0 || r.ProbeDuring.Ops == 0 {
		return 0
	}
	return r.ProbeDuring.P99Ms / r.ProbeBefore.P99Ms
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "\nRebalancing: a 4th node joins 3 nodes holding %d MiB (%d keys of %d bytes) in %d ranges (--range-max-bytes %d MiB)\n",
		r.SizeBytes/mib, r.Keys, r.ValueSize, r.Ranges, r.RangeMaxBytes/mib)
	fmt.Fprintf(w, "load %.1fs (%.1f MiB/s); settled and leaders balanced %.1fs later\n", r.LoadSec, r.LoadMiBPerSec, r.SettleSec)
	if r.NewNode != "" {
		r.writeJoin(w)
	}
	fmt.Fprintf(w, "\nREBALANCE size_mib %d ranges %d share_s %.1f leaders_s %.1f leaderships_s %.1f end_s %.1f new_replicas %d new_leaders %d p99_before_ms %.2f p99_during_ms %.2f max_during_ms %.2f p99_ratio %.2f\n",
		r.SizeBytes/mib, r.RangesAfter, r.ShareSec, r.LeadersSec, r.LeadershipsSec, r.EndSec, r.NewReplicas, r.NewLeaders,
		r.ProbeBefore.P99Ms, r.ProbeDuring.P99Ms, r.ProbeDuring.MaxMs, r.p99Ratio())
}

// writeJoin reports what happened after the 4th node started.
func (r *report) writeJoin(w io.Writer) {
	fmt.Fprintf(w, "%s ready %.1fs after its start; times below count from its start\n", r.NewNode, r.ReadySec)
	fmt.Fprintf(w, "fair share (%d ranges x 3 / 4 nodes, within one; every range at 3 replicas): %s\n", r.RangesAfter, secs(r.ShareSec))
	fmt.Fprintf(w, "user ranges' leaders balanced within one over 4 nodes:                     %s\n", secs(r.LeadersSec))
	fmt.Fprintf(w, "every Raft group's leadership within one (the meta range's counted too):  %s\n", secs(r.LeadershipsSec))
	fmt.Fprintf(w, "rebalancing over (the probe's \"during\" window ends):                       %s\n", secs(r.EndSec))
	fmt.Fprintf(w, "%s received %.1f MiB: %.1f MiB/s over the time to its share\n", r.NewNode, r.NewDataMiB, r.NewMiBPerSec)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "node\treplicas before\tleaders before\treplicas after\tleaders after\thosted after\tdata MiB after")
	before := map[string]nodeRow{}
	for _, n := range r.Before {
		before[n.ID] = n
	}
	// A "+m" marks the node leading the meta range.
	meta := func(id, leader string) string {
		if id == leader {
			return "+m"
		}
		return ""
	}
	for _, n := range r.After {
		b := before[n.ID]
		fmt.Fprintf(tw, "%s\t%d\t%d%s\t%d\t%d%s\t%d\t%.1f\n", n.ID, b.Replicas, b.Leaders, meta(n.ID, r.MetaLeaderBefore),
			n.Replicas, n.Leaders, meta(n.ID, r.MetaLeader), n.Hosted, n.DataMiB)
	}
	tw.Flush()

	fmt.Fprintf(w, "probe (%.0f puts/s of %d bytes on random loaded keys, open loop; skipped: ticks that found %d puts out):\n", r.ProbeRate, r.ProbeValueSize, maxProbeInFlight)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "window\tfrom s\tto s\tputs\terrors\tskipped\tp50 ms\tp99 ms\tmax ms")
	for _, p := range []struct {
		name string
		s    probeStats
	}{{"before the join", r.ProbeBefore}, {"during rebalancing", r.ProbeDuring}} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\n", p.name, p.s.From, p.s.To, p.s.Ops, p.s.Errors, p.s.Skipped, p.s.P50Ms, p.s.P99Ms, p.s.MaxMs)
	}
	tw.Flush()
	if len(r.SlowPuts) > 0 {
		fmt.Fprintln(w, "slow probe puts during rebalancing (-slow; wall clock in UTC, as the nodes' logs):")
		for _, s := range r.SlowPuts {
			failed := ""
			if s.Failed {
				failed = "  failed"
			}
			fmt.Fprintf(w, "  %s  %6.2fs  %8.2f ms  %s%s\n", s.At, s.AtSec, s.Ms, s.Key, failed)
		}
	}
}

func secs(s float64) string {
	if s < 0 {
		return "not reached"
	}
	return fmt.Sprintf("%.1fs", s)
}

func (r *report) writeJSON(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
