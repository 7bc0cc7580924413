package main

import (
	"context"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
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
