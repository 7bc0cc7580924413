package api

import (
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/prometheus/client_golang/prometheus"
)

// gathered maps each series of family name, by its labels, to its value:
// a histogram's sample count, a gauge's value.
func gathered(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			if h := m.GetHistogram(); h != nil {
				out[key] = float64(h.GetSampleCount())
			} else {
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// Read latency is kept per level asked for, with no level meaning
// linearizable, and a level no client should send folded into one label
// (a request must not be able to mint series).
func TestMetrics_ReadLatencyByLevel(t *testing.T) {
	tests := []struct {
		method string
		level  kvpb.Consistency
		want   string
	}{
		{"Get", kvpb.Consistency_CONSISTENCY_UNSPECIFIED, "level=linearizable method=Get "},
		{"Get", kvpb.Consistency_CONSISTENCY_BOUNDED, "level=bounded method=Get "},
		{"Scan", kvpb.Consistency_CONSISTENCY_STALE, "level=stale method=Scan "},
		{"Get", kvpb.Consistency(42), "level=invalid method=Get "},
		{"Get", kvpb.Consistency(43), "level=invalid method=Get "},
	}
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	want := map[string]float64{}
	for _, tt := range tests {
		m.observeReadLatency(tt.method, &kvpb.ReadOptions{Consistency: tt.level}, time.Now())
		want[tt.want]++
	}
	got := gathered(t, reg, "dialkv_read_duration_seconds")
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("dialkv_read_duration_seconds{%s} counted %v, want %v", k, got[k], n)
		}
	}
}

// Staleness is kept per level served, and only for answers that carried a
// bound.
func TestMetrics_StalenessByLevel(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	for _, h := range []*kvpb.ReadHeader{
		{Consistency: kvpb.Consistency_CONSISTENCY_BOUNDED, StalenessMs: 40},
		{Consistency: kvpb.Consistency_CONSISTENCY_STALE, StalenessMs: 7},
		{Consistency: kvpb.Consistency_CONSISTENCY_STALE, StalenessMs: 900},
		{Consistency: kvpb.Consistency_CONSISTENCY_LINEARIZABLE},
		nil,
	} {
		m.observeRead(h)
	}
	got := gathered(t, reg, "dialkv_read_staleness_ms")
	if len(got) != 2 || got["level=bounded "] != 1 || got["level=stale "] != 2 {
		t.Fatalf("dialkv_read_staleness_ms = %v, want bounded 1, stale 2", got)
	}
}

// The open-watch gauge counts streams until they end.
func TestMetrics_WatchStreamsOpen(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	first, second := m.watchOpened(), m.watchOpened()
	if got := gathered(t, reg, "dialkv_watch_streams")[""]; got != 2 {
		t.Fatalf("two watches open: gauge %v", got)
	}
	first()
	second()
	if got := gathered(t, reg, "dialkv_watch_streams")[""]; got != 0 {
		t.Fatalf("both watches ended: gauge %v", got)
	}
}
