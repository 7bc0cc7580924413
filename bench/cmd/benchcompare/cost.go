package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
)

// costFamilies are the counters sampled around each run of a system.
var costFamilies = map[string][]string{
	"dialkv": {cluster.DialkvFsyncs, cluster.DialkvLogRecords, cluster.DialkvMessages, cluster.DialkvSocketWrites, cluster.DialkvPeerBytes},
	"etcd":   {cluster.EtcdFsyncs, cluster.EtcdPeerBytes},
}

// runCost is what one run used beyond the operations kvbench counted:
// what the ratios alone cannot say, namely why one system does more with
// the same two cores and disk. Counts are sums over the three members.
type runCost struct {
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// MemberCPU is each server's share, in member order, and BusiestCPU
	// the largest of them in each run (a single range's leader), summed
	// over merged rounds so that a leader that moved between rounds still
	// counts whole: it is what bounds a machine where every member has
	// cores of its own.
	MemberCPU  []time.Duration `json:"member_cpu_ns"`
	BusiestCPU time.Duration   `json:"busiest_cpu_ns"`
	BenchCPU   time.Duration   `json:"bench_cpu_ns"`
	// ContextSwitches are the machine's: each one a thread parked and
	// another woken, which is what a goroutine hand-off costs when no
	// thread is spinning.
	ContextSwitches uint64  `json:"context_switches"`
	Fsyncs          float64 `json:"fsyncs"`
	PeerBytes       float64 `json:"peer_bytes"`
	// dialkv only: the WAL's records (a range's batch of entries, a cut, a
	// term) and the link's messages (Raft requests and answers of every
	// range) and the socket writes that carried them.
	LogRecords   float64 `json:"log_records,omitempty"`
	Messages     float64 `json:"messages,omitempty"`
	SocketWrites float64 `json:"socket_writes,omitempty"`
}

// add accumulates o into c, for merging rounds.
func (c *runCost) add(o *runCost) {
	c.ServerCPU += o.ServerCPU
	c.BusiestCPU += o.BusiestCPU
	for i, m := range o.MemberCPU {
		if i == len(c.MemberCPU) {
			c.MemberCPU = append(c.MemberCPU, 0)
		}
		c.MemberCPU[i] += m
	}
	c.BenchCPU += o.BenchCPU
	c.ContextSwitches += o.ContextSwitches
	c.Fsyncs += o.Fsyncs
	c.PeerBytes += o.PeerBytes
	c.LogRecords += o.LogRecords
	c.Messages += o.Messages
	c.SocketWrites += o.SocketWrites
}

// sampleCost samples c's usage before a run; the returned function
// samples it again afterwards and gives the difference, with bench the
// CPU the load generator used.
func sampleCost(ctx context.Context, c *cluster.Cluster) (func(bench time.Duration) (*runCost, error), error) {
	fams := costFamilies[c.System]
	before, err := c.Sample(ctx, fams...)
	if err != nil {
		return nil, err
	}
	return func(bench time.Duration) (*runCost, error) {
		after, err := c.Sample(ctx, fams...)
		if err != nil {
			return nil, err
		}
		d, err := after.Sub(before)
		if err != nil {
			return nil, err
		}
		// A family renamed by either system would read as zero: say so.
		for _, f := range fams {
			if _, ok := d.Counters[f]; !ok {
				return nil, fmt.Errorf("no member of %s exports %s", c.System, f)
			}
		}
		rc := &runCost{ServerCPU: d.TotalCPU(), MemberCPU: d.MemberCPU, BusiestCPU: d.BusiestCPU(),
			BenchCPU: bench, ContextSwitches: d.ContextSwitches}
		switch c.System {
		case "dialkv":
			rc.Fsyncs, rc.PeerBytes = d.Counters[cluster.DialkvFsyncs], d.Counters[cluster.DialkvPeerBytes]
			rc.LogRecords, rc.Messages, rc.SocketWrites = d.Counters[cluster.DialkvLogRecords], d.Counters[cluster.DialkvMessages], d.Counters[cluster.DialkvSocketWrites]
		case "etcd":
			rc.Fsyncs, rc.PeerBytes = d.Counters[cluster.EtcdFsyncs], d.Counters[cluster.EtcdPeerBytes]
		}
		return rc, nil
	}, nil
}

// costRow is one workload and system's cost, its rounds merged.
type costRow struct {
	Workload string  `json:"workload"`
	System   string  `json:"system"`
	Ops      int64   `json:"ops"`
	Cost     runCost `json:"cost"`
}

// per divides v by the row's operations.
func (r costRow) per(v float64) float64 {
	if r.Ops == 0 {
		return 0
	}
	return v / float64(r.Ops)
}

// ratio is a/b, or 0 when b is.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// costRows merges each workload and system's runs that have a cost.
func costRows(names []string, runs []runRecord) []costRow {
	var rows []costRow
	for _, name := range names {
		for _, s := range systems {
			row := costRow{Workload: name, System: s}
			seen := false
			for _, r := range runs {
				if r.Workload != name || r.System != s || r.Cost == nil {
					continue
				}
				seen = true
				row.Ops += r.Result.Total.Ops
				row.Cost.add(r.Cost)
			}
			if seen {
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// printCosts prints the cost table and one COST line per row:
//
//	COST <workload> <system> server_cpu_us <µs/op> busiest_server_cpu_us <µs/op> bench_cpu_us <µs/op> context_switches <n/op> fsyncs <n/op> peer_bytes <B/op> [messages <n/op> bytes_per_message <B> messages_per_write <n> records_per_fsync <n>]
func (b *bench) printCosts(rows []costRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b.out, "\nCost per operation (rounds merged; CPU of the three servers and of kvbench, the machine's context switches, the servers' fsyncs and bytes sent to peers; dialkv's link messages)\n")
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tsystem\tops\tserver CPU µs\tbusiest server µs\tkvbench CPU µs\tcontext switches\tfsyncs\tpeer bytes\tmessages\tbytes/message\tmessages/write\trecords/fsync")
	for _, r := range rows {
		c := r.Cost
		dialkv := "-\t-\t-\t-"
		if r.System == "dialkv" {
			dialkv = fmt.Sprintf("%.2f\t%.0f\t%.1f\t%.1f", r.per(c.Messages), ratio(c.PeerBytes, c.Messages),
				ratio(c.Messages, c.SocketWrites), ratio(c.LogRecords, c.Fsyncs))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.3f\t%.0f\t%s\n", r.Workload, r.System, r.Ops,
			r.per(float64(c.ServerCPU.Microseconds())), r.per(float64(c.BusiestCPU.Microseconds())), r.per(float64(c.BenchCPU.Microseconds())),
			r.per(float64(c.ContextSwitches)), r.per(c.Fsyncs), r.per(c.PeerBytes), dialkv)
	}
	tw.Flush()
	fmt.Fprintln(b.out)
	for _, r := range rows {
		fmt.Fprintln(b.out, costLine(r))
	}
}

func costLine(r costRow) string {
	c := r.Cost
	var sb strings.Builder
	fmt.Fprintf(&sb, "COST %s %s server_cpu_us %.1f busiest_server_cpu_us %.1f bench_cpu_us %.1f context_switches %.1f fsyncs %.3f peer_bytes %.0f",
		r.Workload, r.System, r.per(float64(c.ServerCPU.Microseconds())), r.per(float64(c.BusiestCPU.Microseconds())), r.per(float64(c.BenchCPU.Microseconds())),
		r.per(float64(c.ContextSwitches)), r.per(c.Fsyncs), r.per(c.PeerBytes))
	if r.System == "dialkv" {
		fmt.Fprintf(&sb, " messages %.2f bytes_per_message %.0f messages_per_write %.1f records_per_fsync %.1f",
			r.per(c.Messages), ratio(c.PeerBytes, c.Messages), ratio(c.Messages, c.SocketWrites), ratio(c.LogRecords, c.Fsyncs))
	}
	return sb.String()
}
