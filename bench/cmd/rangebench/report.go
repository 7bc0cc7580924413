package main

import (
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/workload"
)

// row is one range count's figures. CPU figures are % of one core; memory
// is MiB.
type row struct {
	Ranges int    `json:"ranges"`
	Error  string `json:"error,omitempty"`
	// Partial is set when creating the ranges failed and the idle figures
	// are of the RangesCreated ranges there were (-1: unknown).
	Partial       bool `json:"partial,omitempty"`
	RangesCreated int  `json:"ranges_created,omitempty"`

	StartSec     float64 `json:"start_s"`
	SplitSec     float64 `json:"split_s"`
	LeadersSec   float64 `json:"leaders_wait_s"`
	SetupSec     float64 `json:"setup_s"` // splits plus the wait for every leader
	SplitRetries int64   `json:"split_retries"`

	IdleWindowSec       float64 `json:"idle_window_s"`
	IdleCPUMean         float64 `json:"idle_cpu_pct_mean"`
	IdleCPUMax          float64 `json:"idle_cpu_pct_max"`
	RSSMean             float64 `json:"rss_mib_mean"`
	RSSMax              float64 `json:"rss_mib_max"`
	HWMMax              float64 `json:"hwm_mib_max"`
	DiskMiB             float64 `json:"disk_mib"`      // the 3 nodes' data and logs, end of the idle window
	DiskPeakMiB         float64 `json:"disk_peak_mib"` // the most seen by the disk guard
	IdleElections       int64   `json:"idle_elections"`
	LeaderlessAfterIdle int     `json:"leaderless_after_idle"`
	AsleepPct           float64 `json:"hibernating_pct"` // replicas hibernating at the end of the idle window
	IdleBenchCPU        float64 `json:"idle_bench_cpu_pct"`
	IdleOtherCPU        float64 `json:"idle_other_cpu_pct"`
	Load1Idle           string  `json:"loadavg_idle,omitempty"`

	PutsPerSec      float64               `json:"puts_per_sec"`
	P50Ms           float64               `json:"p50_ms"`
	P99Ms           float64               `json:"p99_ms"`
	PutErrors       int64                 `json:"put_errors"`
	Put             workload.Stats        `json:"put"`
	PutErrorSamples []workload.ErrorCount `json:"put_error_samples,omitempty"`
	WriteCPUMean    float64               `json:"write_cpu_pct_mean"`
	WriteCPUMax     float64               `json:"write_cpu_pct_max"`
	WriteElections  int64                 `json:"write_elections"`
	WriteOtherCPU   float64               `json:"write_other_cpu_pct"`
	Load1Write      string                `json:"loadavg_write,omitempty"`

	// StopSecMax is the longest a node took to stop; StopNote says which
	// node ignored SIGTERM and had to be killed.
	StopSecMax float64 `json:"stop_s_max"`
	StopNote   string  `json:"stop_note,omitempty"`

	Nodes []nodeRow `json:"nodes,omitempty"`
}

// nodeRow is one node process of a run.
type nodeRow struct {
	Name             string  `json:"name"`
	PID              int     `json:"pid"`
	IdleCPUPct       float64 `json:"idle_cpu_pct"`
	RSSMiB           float64 `json:"idle_rss_mib"`
	HWMMiB           float64 `json:"idle_hwm_mib"`
	Threads          int     `json:"threads"`
	FDs              int     `json:"fds"`
	Goroutines       int     `json:"goroutines"`
	Replicas         int     `json:"replicas"`
	Leaders          int     `json:"leaders"`
	Asleep           int     `json:"hibernating"`
	WriteCPUPct      float64 `json:"write_cpu_pct"`
	RSSAfterWriteMiB float64 `json:"rss_after_write_mib"`
	HWMAfterWriteMiB float64 `json:"hwm_after_write_mib"`
	StopSec          float64 `json:"stop_s"`
	Log              string  `json:"log,omitempty"`
}

type host struct {
	Cores      int    `json:"cores"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	Kernel     string `json:"kernel,omitempty"`
	LoadAvgBeg string `json:"loadavg_start"`
}

func hostInfo() host {
	h := host{Cores: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, LoadAvgBeg: cluster.LoadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	return h
}

type settings struct {
	KVD          string  `json:"kvd"`
	KVDBuild     string  `json:"kvd_build"`
	SettleSec    float64 `json:"settle_s"`
	IdleSec      float64 `json:"idle_s"`
	WriteSec     float64 `json:"write_s"`
	Clients      int     `json:"clients"`
	Conns        int     `json:"conns"`
	ValueSize    int     `json:"value_size"`
	Keys         int     `json:"keys"`
	SplitWorkers int     `json:"split_workers"`
	KVDLogLevel  string  `json:"kvd_log_level"`
	KVDArgs      string  `json:"kvd_args,omitempty"`
	CPUUnit      string  `json:"cpu_unit"`
}

func (o *options) settings() settings {
	return settings{KVD: o.kvd, KVDBuild: kvdBuild(o.kvd), SettleSec: o.settle.Seconds(), IdleSec: o.idle.Seconds(), WriteSec: o.duration.Seconds(),
		Clients: o.clients, Conns: o.conns, ValueSize: o.valueSize, Keys: keySpace, SplitWorkers: o.splitWorkers,
		KVDLogLevel: o.logLevel, KVDArgs: strings.Join(o.kvdArgs, " "), CPUUnit: "% of one core"}
}

// kvdBuild describes the kvd binary: its modification time and, when Go
// recorded them, the VCS revision and whether the tree was modified.
func kvdBuild(path string) string {
	var parts []string
	if fi, err := os.Stat(path); err == nil {
		parts = append(parts, "built "+fi.ModTime().UTC().Format(time.RFC3339))
	}
	if bi, err := buildinfo.ReadFile(path); err == nil {
		for _, st := range bi.Settings {
			if strings.HasPrefix(st.Key, "vcs.") {
				parts = append(parts, st.Key+"="+st.Value)
			}
		}
	}
	return strings.Join(parts, " ")
}

// report is the JSON file of -json.
type report struct {
	Started    string   `json:"started"`
	Host       host     `json:"host"`
	Settings   settings `json:"settings"`
	LoadAvgEnd string   `json:"loadavg_end"`
	Rows       []*row   `json:"rows"`
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeTable prints one row per range count. CPU is % of one core per
// node process (mean and max over the 3 nodes), RSS is VmRSS at the end of
// the idle window, HWM is the highest VmHWM by then (the splits included).
func (rep *report) writeTable(w io.Writer) {
	s := rep.Settings
	fmt.Fprintf(w, "\nRanges per node: 3 nodes, every range on all 3; idle %.0fs after %.0fs settle; writes %d clients, %d-byte values, %.0fs, keys uniform over all ranges\n",
		s.IdleSec, s.SettleSec, s.Clients, s.ValueSize, s.WriteSec)
	fmt.Fprintf(w, "%d cores; load average at start %s, at end %s; kvd %s (%s) %s\n", rep.Host.Cores, rep.Host.LoadAvgBeg, rep.LoadAvgEnd, s.KVD, s.KVDBuild, s.KVDArgs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ranges\tsetup s\tsplit s\tidle cpu% mean\tidle cpu% max\trss MiB mean\trss MiB max\thwm MiB max\tdisk MiB\tasleep %\tidle elections\tputs/s\tp50 ms\tp99 ms\tput errors\twrite cpu% max\tother cpu%\tstop s\t")
	for _, r := range rep.Rows {
		if r.IdleWindowSec == 0 {
			fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t-\t-\t-\t-\t-\t%.0f\t-\t-\t-\t-\t-\t-\t-\t-\t%.1f\t\n", r.Ranges, r.SetupSec, r.SplitSec, r.DiskPeakMiB, r.StopSecMax)
			continue
		}
		puts, p50, p99, perrs, wcpu := "-", "-", "-", "-", "-"
		if r.Put.Ops > 0 || r.PutErrors > 0 {
			puts, p50, p99 = fmt.Sprintf("%.0f", r.PutsPerSec), fmt.Sprintf("%.2f", r.P50Ms), fmt.Sprintf("%.2f", r.P99Ms)
			perrs, wcpu = fmt.Sprint(r.PutErrors), fmt.Sprintf("%.0f", r.WriteCPUMax)
		}
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t%.0f\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.1f\t\n",
			r.Ranges, r.SetupSec, r.SplitSec, r.IdleCPUMean, r.IdleCPUMax, r.RSSMean, r.RSSMax, r.HWMMax,
			r.DiskMiB, r.AsleepPct, r.IdleElections, puts, p50, p99, perrs, wcpu, r.IdleOtherCPU, r.StopSecMax)
	}
	tw.Flush()
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(w, "FAILED %d ranges: %s\n", r.Ranges, firstLine(r.Error))
		}
		if r.Partial && r.IdleWindowSec > 0 {
			fmt.Fprintf(w, "PARTIAL %d ranges: the idle figures are of the %d user ranges that existed when setup failed, %d of them without a leader at the end\n",
				r.Ranges, r.RangesCreated, r.LeaderlessAfterIdle)
		}
		if r.StopNote != "" {
			fmt.Fprintf(w, "NOTE %d ranges: stopping took up to %.1fs: %s\n", r.Ranges, r.StopSecMax, r.StopNote)
		}
	}
	fmt.Fprintln(w)
	for _, r := range rep.Rows {
		if r.IdleWindowSec > 0 && !r.Partial {
			fmt.Fprintf(w, "RANGES %d setup_s %.1f idle_cpu_pct_mean %.1f idle_cpu_pct_max %.1f rss_mib_mean %.1f rss_mib_max %.1f puts_per_sec %.0f p50_ms %.2f p99_ms %.2f\n",
				r.Ranges, r.SetupSec, r.IdleCPUMean, r.IdleCPUMax, r.RSSMean, r.RSSMax, r.PutsPerSec, r.P50Ms, r.P99Ms)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
