package main

import (
	"context"
	"strconv"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/prometheus/client_golang/prometheus"
)

// statusSource is the part of a node the range collector reads.
type statusSource interface {
	Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error)
}

// rangeCollector exports each hosted range's Raft progress at scrape time.
type rangeCollector struct {
	src                                    statusSource
	term, commit, applied, lastLog, leader *prometheus.Desc
	keys, size                             *prometheus.Desc
	appendFailures                         *prometheus.Desc
}

func newRangeCollector(src statusSource) *rangeCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("dialkv_range_"+name, help, []string{"range"}, nil)
	}
	return &rangeCollector{
		src:     src,
		term:    d("raft_term", "Current Raft term of the range replica."),
		commit:  d("commit_index", "Raft commit index known to the replica."),
		applied: d("applied_index", "Index applied to the replica's state machine."),
		lastLog: d("last_log_index", "Last index in the replica's Raft log."),
		leader:  d("is_leader", "1 when this replica leads the range."),
		keys:    d("keys", "Keys committed to the replica's bbolt bucket."),
		size:    d("size_bytes", "Bytes of keys and values committed to the replica's bbolt bucket."),
		appendFailures: prometheus.NewDesc("dialkv_raft_append_failures_total",
			"Appends the range replica's Raft log refused since the node started; one that keeps rising has stopped taking its leader's entries.",
			[]string{"range"}, nil),
	}
}

func (c *rangeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.commit, c.applied, c.lastLog, c.leader, c.keys, c.size, c.appendFailures} {
		ch <- d
	}
}

func (c *rangeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.src.Status(context.Background(), &kvpb.StatusRequest{})
	if err != nil {
		return
	}
	for _, r := range st.Node.Ranges {
		id := strconv.FormatUint(r.Id, 10)
		leader := 0.0
		if r.State == "Leader" {
			leader = 1
		}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, id)
		}
		g(c.term, float64(r.Term))
		g(c.commit, float64(r.CommitIndex))
		g(c.applied, float64(r.AppliedIndex))
		g(c.lastLog, float64(r.LastLogIndex))
		g(c.leader, leader)
		g(c.keys, float64(r.Keys))
		g(c.size, float64(r.SizeBytes))
		ch <- prometheus.MustNewConstMetric(c.appendFailures, prometheus.CounterValue, float64(r.AppendFailures), id)
	}
}
