package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Counters of the servers' own that the benchmarks sample, by what they
// count: fsyncs of the write-ahead log, its records (a range's batch of
// entries, a cut, a term), the Raft link's messages, the socket writes
// that carried them and their bytes. etcd's fsyncs are its fsync
// histogram's samples.
const (
	DialkvFsyncs       = "dialkv_wal_fsyncs_total"
	DialkvLogRecords   = "dialkv_wal_appends_total"
	DialkvMessages     = "dialkv_link_messages_sent_total"
	DialkvSocketWrites = "dialkv_link_writes_total"
	DialkvPeerBytes    = "dialkv_link_sent_bytes_total"
	EtcdFsyncs         = "etcd_disk_wal_fsync_duration_seconds"
	EtcdPeerBytes      = "etcd_network_peer_sent_bytes_total"
)

// metricsLimit bounds one member's /metrics page.
const metricsLimit = 64 << 20

// Usage is what a cluster's members had used at one moment. Two samples
// taken around a run, divided by the operations it did, give the costs a
// benchmark cannot see from outside: CPU, context switches and (from the
// servers' own counters) fsyncs and messages per operation.
type Usage struct {
	At time.Time
	// Wall is the time between the two samples of a difference (Sub);
	// zero in a sample.
	Wall time.Duration
	// MemberCPU is each member's user plus system time (/proc/PID/stat),
	// in the order of Procs.
	MemberCPU []time.Duration
	// ContextSwitches counts the whole machine's (/proc/stat): a process's
	// own would need every one of its threads, and on a machine running
	// only the benchmark nearly all of them are the members' and the load
	// generator's.
	ContextSwitches uint64
	// Counters holds, for each family asked for, the sum over the members
	// of every series' value (a histogram's: its count of samples). A
	// family no member exports is absent.
	Counters map[string]float64
}

// Sample reads the members' CPU time, the machine's context switches and
// the named metric families from every member's /metrics.
func (c *Cluster) Sample(ctx context.Context, families ...string) (Usage, error) {
	u := Usage{At: time.Now(), Counters: map[string]float64{}}
	for _, p := range c.Procs {
		cpu, err := ReadProcCPU(p.PID())
		if err != nil {
			return u, fmt.Errorf("%s: %w", p.Name, err)
		}
		u.MemberCPU = append(u.MemberCPU, cpu)
	}
	ms, err := machineStat()
	if err != nil {
		return u, err
	}
	u.ContextSwitches = ms.ContextSwitches
	if len(families) == 0 {
		return u, nil
	}
	want := map[string]bool{}
	for _, f := range families {
		want[f] = true
	}
	for i, url := range c.metricsURLs {
		got, err := c.scrape(ctx, url)
		if err != nil {
			return u, fmt.Errorf("cluster: %s metrics: %w", c.Procs[i].Name, err)
		}
		for name, mf := range got {
			if want[name] {
				u.Counters[name] += familyValue(mf)
			}
		}
	}
	return u, nil
}

func (c *Cluster) scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// Ask for the text format: etcd would otherwise pick protobuf.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(io.LimitReader(resp.Body, metricsLimit))
}

// familyValue sums a family's series: counters', gauges' and untyped
// values, histograms' and summaries' sample counts.
func familyValue(mf *dto.MetricFamily) float64 {
	var v float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			v += float64(m.Summary.GetSampleCount())
		}
	}
	return v
}

// Sub returns what was used between before and u: durations, counts and
// each counter u and before both hold.
func (u Usage) Sub(before Usage) (Usage, error) {
	if u.At.Before(before.At) {
		return Usage{}, errors.New("cluster: usage samples out of order")
	}
	if len(u.MemberCPU) != len(before.MemberCPU) {
		return Usage{}, fmt.Errorf("cluster: %d members sampled, then %d", len(before.MemberCPU), len(u.MemberCPU))
	}
	d := Usage{At: u.At, Wall: u.At.Sub(before.At), ContextSwitches: u.ContextSwitches - before.ContextSwitches,
		Counters: map[string]float64{}}
	for i, cpu := range u.MemberCPU {
		d.MemberCPU = append(d.MemberCPU, cpu-before.MemberCPU[i])
	}
	for name, v := range u.Counters {
		if b, ok := before.Counters[name]; ok {
			d.Counters[name] = v - b
		}
	}
	return d, nil
}

// TotalCPU is the members' CPU time together.
func (u Usage) TotalCPU() time.Duration {
	var t time.Duration
	for _, c := range u.MemberCPU {
		t += c
	}
	return t
}

// BusiestCPU is the most CPU time one member used (0 without members).
func (u Usage) BusiestCPU() time.Duration {
	var m time.Duration
	for _, c := range u.MemberCPU {
		m = max(m, c)
	}
	return m
}

// StartCPUProfile writes a CPU profile of the calling benchmark (the
// client side) to path until stop is called; an empty path profiles
// nothing. Errors name the -cpuprofile flag; one closing the file (a
// profile cut short) is written to errs, after prog.
func StartCPUProfile(path string, errs io.Writer, prog string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(errs, "%s: -cpuprofile: %v\n", prog, err)
		}
	}, nil
}
