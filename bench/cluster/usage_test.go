package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestFamilyValue_SumsSeriesAndCountsHistogramSamples(t *testing.T) {
	page := `# TYPE dialkv_link_sent_bytes_total counter
dialkv_link_sent_bytes_total 1500
# TYPE dialkv_requests_total counter
dialkv_requests_total{method="Put",code="OK"} 7
dialkv_requests_total{method="Get",code="OK"} 5
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 9
etcd_disk_wal_fsync_duration_seconds_sum 0.02
etcd_disk_wal_fsync_duration_seconds_count 9
# TYPE go_goroutines gauge
go_goroutines 42
`
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"dialkv_link_sent_bytes_total":         1500,
		"dialkv_requests_total":                12,
		"etcd_disk_wal_fsync_duration_seconds": 9,
		"go_goroutines":                        42,
	} {
		mf, ok := fams[name]
		if !ok {
			t.Fatalf("%s not parsed", name)
		}
		if got := familyValue(mf); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestUsageSub(t *testing.T) {
	t0 := time.Unix(100, 0)
	before := Usage{At: t0, MemberCPU: []time.Duration{time.Second, 2 * time.Second},
		ContextSwitches: 1000, Counters: map[string]float64{"a": 10, "b": 1}}
	tests := []struct {
		name    string
		after   Usage
		want    Usage
		wantErr bool
	}{
		{
			name: "differences of what both hold",
			after: Usage{At: t0.Add(2 * time.Second), MemberCPU: []time.Duration{1500 * time.Millisecond, 3500 * time.Millisecond},
				ContextSwitches: 1600, Counters: map[string]float64{"a": 25, "c": 4}},
			want: Usage{At: t0.Add(2 * time.Second), Wall: 2 * time.Second,
				MemberCPU: []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond}, ContextSwitches: 600, Counters: map[string]float64{"a": 15}},
		},
		{name: "samples out of order", after: Usage{At: t0.Add(-time.Second), MemberCPU: make([]time.Duration, 2)}, wantErr: true},
		{name: "a member more", after: Usage{At: t0.Add(time.Second), MemberCPU: make([]time.Duration, 3)}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.after.Sub(before)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Sub = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Wall != tc.want.Wall || got.TotalCPU() != 2*time.Second || got.BusiestCPU() != 1500*time.Millisecond || got.ContextSwitches != tc.want.ContextSwitches ||
				len(got.MemberCPU) != 2 || got.MemberCPU[0] != tc.want.MemberCPU[0] || got.MemberCPU[1] != tc.want.MemberCPU[1] ||
				len(got.Counters) != 1 || got.Counters["a"] != 15 {
				t.Fatalf("Sub = %+v, want %+v", got, tc.want)
			}
		})
	}
}
