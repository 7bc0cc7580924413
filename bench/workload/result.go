package workload

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to a minute, to three
// significant digits.
const (
	histMinMicros = 1
	histMaxMicros = int64(time.Minute / time.Microsecond)
	histSigFigs   = 3
)

// NewHistogram returns an empty latency histogram (values in µs).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)
}

// EncodeHistogram renders h in the HdrHistogram V2 compressed, base64 form.
func EncodeHistogram(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	return string(b), err
}

// DecodeHistogram parses what EncodeHistogram produced.
func DecodeHistogram(s string) (*hdrhistogram.Histogram, error) {
	return hdrhistogram.Decode([]byte(s))
}

// Stats summarises one kind of operation.
type Stats struct {
	// Ops counts operations that succeeded (a get of a missing key
	// included); only they are in the latency figures.
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	Misses int64 `json:"misses,omitempty"`
	// CompareFailed counts transactions (of the txn workload) whose
	// compare did not hold: they ran their read instead of their writes.
	// They are operations like the others.
	CompareFailed int64   `json:"compare_failed,omitempty"`
	OpsPerSec     float64 `json:"ops_per_sec"`
	MeanMs        float64 `json:"mean_ms"`
	P50Ms         float64 `json:"p50_ms"`
	P90Ms         float64 `json:"p90_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
}

// Summarize computes Stats from a latency histogram (µs) of the successful
// operations of a run that lasted elapsed.
func Summarize(h *hdrhistogram.Histogram, errs, misses int64, elapsed time.Duration) Stats {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	s := Stats{Ops: h.TotalCount(), Errors: errs, Misses: misses}
	if elapsed > 0 {
		s.OpsPerSec = float64(s.Ops) / elapsed.Seconds()
	}
	if s.Ops > 0 {
		s.MeanMs = h.Mean() / 1000
		s.P50Ms = ms(h.ValueAtQuantile(50))
		s.P90Ms = ms(h.ValueAtQuantile(90))
		s.P99Ms = ms(h.ValueAtQuantile(99))
		s.MaxMs = ms(h.Max())
	}
	return s
}

// ErrorCount is one distinct error message and how often it occurred.
type ErrorCount struct {
	Message string `json:"message"`
	Count   int64  `json:"count"`
}

// Result is the outcome of one run, as kvbench prints it with -json.
type Result struct {
	System       string  `json:"system,omitempty"`
	Workload     Kind    `json:"workload"`
	Consistency  Level   `json:"consistency,omitempty"`
	ReadRatio    float64 `json:"read_ratio,omitempty"`
	Distribution string  `json:"distribution"`
	TxnKeys      int     `json:"txn_keys,omitempty"`
	Clients      int     `json:"clients"`
	Conns        int     `json:"conns"`
	Keys         int     `json:"keys"`
	ValueSize    int     `json:"value_size"`
	ElapsedSec   float64 `json:"elapsed_s"`
	// Complete is false when the run was cut short: by Duration before
	// Ops (or, for Load, every key) was done, or by cancellation.
	Complete bool   `json:"complete"`
	Total    Stats  `json:"total"`
	Put      *Stats `json:"put,omitempty"`
	Get      *Stats `json:"get,omitempty"`
	// ErrorSamples lists the most frequent error messages.
	ErrorSamples []ErrorCount `json:"error_samples,omitempty"`
	// Histogram is the latency histogram of every successful operation
	// (µs, HdrHistogram V2 compressed, base64), so that runs can be merged.
	Histogram string `json:"histogram,omitempty"`
}

// Elapsed returns ElapsedSec as a duration.
func (r *Result) Elapsed() time.Duration {
	return time.Duration(r.ElapsedSec * float64(time.Second))
}

// WriteJSON writes r as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a human-readable table.
func (r *Result) WriteTable(w io.Writer) error {
	desc := string(r.Workload)
	switch r.Workload {
	case Get:
		desc += " " + string(r.Consistency)
	case Mixed:
		desc += fmt.Sprintf(" %.0f%% get (%s) / %.0f%% put", r.ReadRatio*100, r.Consistency, (1-r.ReadRatio)*100)
	case Txn:
		desc += fmt.Sprintf(" of %d keys", r.TxnKeys)
	}
	fmt.Fprintf(w, "%s: %s, %d clients over %d connections, %d keys (%s), %d-byte values, %.2fs",
		r.System, desc, r.Clients, r.Conns, r.Keys, r.Distribution, r.ValueSize, r.ElapsedSec)
	if !r.Complete {
		fmt.Fprint(w, " (incomplete)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tops\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\tmisses\t")
	row := func(name string, s *Stats) {
		if s == nil {
			return
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t\n",
			name, s.Ops, s.OpsPerSec, s.P50Ms, s.P90Ms, s.P99Ms, s.MaxMs, s.Errors, s.Misses)
	}
	if r.Workload == Mixed {
		row("put", r.Put)
		row("get", r.Get)
	}
	row("total", &r.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Workload == Txn {
		fmt.Fprintf(w, "compare failed: %d of %d transactions\n", r.Total.CompareFailed, r.Total.Ops)
	}
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "error x%d: %s\n", e.Count, e.Message)
	}
	return nil
}

// maxErrorSamples bounds the distinct error messages kept per client and
// in a Result.
const maxErrorSamples = 10

// errorTally counts error messages, keeping at most maxErrorSamples
// distinct ones; the rest are counted under one "other errors" entry.
type errorTally map[string]int64

const otherErrors = "(other errors)"

func (t errorTally) add(msg string, n int64) {
	if _, ok := t[msg]; !ok && len(t) >= maxErrorSamples {
		msg = otherErrors
	}
	t[msg] += n
}

func (t errorTally) top() []ErrorCount {
	out := make([]ErrorCount, 0, len(t))
	for m, c := range t {
		out = append(out, ErrorCount{Message: m, Count: c})
	}
	slices.SortFunc(out, func(a, b ErrorCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return out[:min(len(out), maxErrorSamples)]
}
