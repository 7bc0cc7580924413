package main

import (
	"context"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type fixedStatus struct{ ranges []*kvpb.RangeStatus }

func (f fixedStatus) Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	return &kvpb.StatusResponse{Node: &kvpb.NodeStatus{Ranges: f.ranges}}, nil
}

// A replica whose log refuses appends is counted per range, so that an
// alert can fire on a rise instead of someone reading the node's log.
func TestRangeCollector_ExportsAppendFailuresPerRange(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newRangeCollector(fixedStatus{ranges: []*kvpb.RangeStatus{
		{Id: 1},
		{Id: 2, AppendFailures: 7, AppendError: "its log has refused 7 appends in a row"},
	}}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != "dialkv_raft_append_failures_total" {
			continue
		}
		if mf.GetType() != dto.MetricType_COUNTER {
			t.Errorf("type %v, want a counter", mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "range" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(got) != 2 || got["1"] != 0 || got["2"] != 7 {
		t.Fatalf("dialkv_raft_append_failures_total by range = %v, want map[1:0 2:7]", got)
	}
}

type fixedWAL wal.Stats

func (f fixedWAL) WALStats() wal.Stats { return wal.Stats(f) }

// The node's write-ahead log is exported under dialkv_wal_*, counters as
// counters, so that fsyncs per append can be graphed as a rate.
func TestWALCollector_ExportsTheLogsStats(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newWALCollector(fixedWAL{
		Writes: 1000, WrittenBytes: 300000, Syncs: 90, LastSync: 1500 * time.Microsecond,
		Segments: 3, Bytes: 150000000, RewrittenBytes: 4096, Collections: 2,
	}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type metric struct {
		typ dto.MetricType
		val float64
	}
	got := map[string]metric{}
	for _, mf := range families {
		m := mf.GetMetric()[0]
		v := m.GetGauge().GetValue()
		if mf.GetType() == dto.MetricType_COUNTER {
			v = m.GetCounter().GetValue()
		}
		got[mf.GetName()] = metric{mf.GetType(), v}
	}
	want := map[string]metric{
		"dialkv_wal_fsyncs_total":                   {dto.MetricType_COUNTER, 90},
		"dialkv_wal_appends_total":                  {dto.MetricType_COUNTER, 1000},
		"dialkv_wal_written_bytes_total":            {dto.MetricType_COUNTER, 300000},
		"dialkv_wal_collector_copied_bytes_total":   {dto.MetricType_COUNTER, 4096},
		"dialkv_wal_collector_freed_segments_total": {dto.MetricType_COUNTER, 2},
		"dialkv_wal_segments":                       {dto.MetricType_GAUGE, 3},
		"dialkv_wal_segment_bytes":                  {dto.MetricType_GAUGE, 150000000},
		"dialkv_wal_last_sync_seconds":              {dto.MetricType_GAUGE, 0.0015},
	}
	if len(got) != len(want) {
		t.Errorf("exported %d metrics, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %+v (exported: %v), want %+v", name, g, ok, w)
		}
	}
}
