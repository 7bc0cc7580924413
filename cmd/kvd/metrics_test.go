package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/dialkv/dialkv/replication/link"
	"github.com/dialkv/dialkv/shard"
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
		Writes: 1000, FileWrites: 120, WrittenBytes: 300000, Syncs: 90, LastSync: 1500 * time.Microsecond,
		Segments: 3, Bytes: 150000000, RewrittenBytes: 4096, Collections: 2,
		SyncHistogram: syncHistogram(map[int]uint64{0: 50, 9: 30, 10: 6, len(wal.SyncBuckets()): 4}), SyncTime: 20 * time.Second,
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
	var fsync *dto.Histogram
	for _, mf := range families {
		m := mf.GetMetric()[0]
		v := m.GetGauge().GetValue()
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			v = m.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			fsync = m.GetHistogram()
			v = float64(fsync.GetSampleCount())
		}
		got[mf.GetName()] = metric{mf.GetType(), v}
	}
	want := map[string]metric{
		"dialkv_wal_fsyncs_total":                   {dto.MetricType_COUNTER, 90},
		"dialkv_wal_appends_total":                  {dto.MetricType_COUNTER, 1000},
		"dialkv_wal_file_writes_total":              {dto.MetricType_COUNTER, 120},
		"dialkv_wal_written_bytes_total":            {dto.MetricType_COUNTER, 300000},
		"dialkv_wal_collector_copied_bytes_total":   {dto.MetricType_COUNTER, 4096},
		"dialkv_wal_collector_freed_segments_total": {dto.MetricType_COUNTER, 2},
		"dialkv_wal_segments":                       {dto.MetricType_GAUGE, 3},
		"dialkv_wal_segment_bytes":                  {dto.MetricType_GAUGE, 150000000},
		"dialkv_wal_last_sync_seconds":              {dto.MetricType_GAUGE, 0.0015},
		"dialkv_wal_fsync_duration_seconds":         {dto.MetricType_HISTOGRAM, 90},
	}
	if len(got) != len(want) {
		t.Errorf("exported %d metrics, want %d: %v", len(got), len(want), got)
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %+v (exported: %v), want %+v", name, g, ok, w)
		}
	}
	// Cumulative buckets: 80 syncs took at most 100 ms (the fsync
	// alert's line), 86 at most 250 ms; the 4 slower than every bound
	// only in the count.
	cum := map[float64]uint64{}
	for _, b := range fsync.GetBucket() {
		cum[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	for bound, want := range map[float64]uint64{0.0001: 50, 0.05: 50, 0.1: 80, 0.25: 86, 10: 86} {
		if cum[bound] != want {
			t.Errorf("fsync histogram bucket le=%v holds %d, want %d (buckets %v)", bound, cum[bound], want, cum)
		}
	}
	if fsync.GetSampleSum() != 20 {
		t.Errorf("fsync histogram sum %v, want 20", fsync.GetSampleSum())
	}
}

// syncHistogram is a wal.Stats.SyncHistogram with the given buckets set.
func syncHistogram(counts map[int]uint64) (h [len(wal.Stats{}.SyncHistogram)]uint64) {
	for i, n := range counts {
		h[i] = n
	}
	return h
}

type fixedHost struct{ leases int }

func (fixedHost) Shards() []*shard.Shard { return nil }
func (f fixedHost) LiveLeases() int      { return f.leases }

// The data filesystem's room is exported so that an alert can fire before
// the node stops being ready, and left out when it cannot be read rather
// than shown as a full disk.
func TestHostCollector_ExportsLeasesAndDiskSpace(t *testing.T) {
	tests := []struct {
		name  string
		space diskSpace
		want  map[string]float64
	}{
		{"disk known", func(dir string) (uint64, uint64, error) {
			if dir != "/data" {
				return 0, 0, fmt.Errorf("asked about %q, not the data dir", dir)
			}
			return 1000, 75, nil
		}, map[string]float64{"dialkv_leases": 3, "dialkv_disk_size_bytes": 1000, "dialkv_disk_available_bytes": 75}},
		{"disk unknown", func(string) (uint64, uint64, error) { return 0, 0, errors.New("no statfs") },
			map[string]float64{"dialkv_leases": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(newHostCollector(fixedHost{leases: 3}, "/data", tt.space))
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range families {
				got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("exported %v, want %v", got, tt.want)
			}
		})
	}
}

type fixedLink struct {
	st link.Stats
	ok bool
}

func (f fixedLink) LinkStats() (link.Stats, bool) { return f.st, f.ok }

// The shared link's counters are exported under dialkv_link_*, and
// nothing is with per-range streams.
func TestLinkCollector_ExportsTheLinksCounters(t *testing.T) {
	tests := []struct {
		name string
		src  fixedLink
		want map[string]float64
	}{
		{"link", fixedLink{ok: true, st: link.Stats{MessagesSent: 900, Writes: 300, BytesSent: 1 << 20, MessagesReceived: 880,
			BytesReceived: 2 << 20, Dials: 4, LegacyFallbacks: 1, LegacyCalls: 7, LegacyReceived: 9,
			ConfirmRequests: 11, ConfirmQuestions: 40}},
			map[string]float64{
				"dialkv_link_messages_sent_total": 900, "dialkv_link_writes_total": 300, "dialkv_link_sent_bytes_total": 1 << 20,
				"dialkv_link_messages_received_total": 880, "dialkv_link_received_bytes_total": 2 << 20, "dialkv_link_dials_total": 4,
				"dialkv_link_legacy_fallbacks_total": 1, "dialkv_link_legacy_calls_total": 7, "dialkv_link_legacy_received_total": 9,
				"dialkv_link_confirm_requests_total": 11, "dialkv_link_confirm_questions_total": 40,
			}},
		{"per-range streams", fixedLink{}, map[string]float64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(newLinkCollector(tt.src))
			families, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range families {
				if mf.GetType() != dto.MetricType_COUNTER {
					t.Errorf("%s is a %v, want a counter", mf.GetName(), mf.GetType())
				}
				got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("exported %v, want %v", got, tt.want)
			}
		})
	}
}
