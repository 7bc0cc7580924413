package api

import (
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// Metrics are the API's Prometheus series. Each node registers its own in
// its own registry, so several nodes can share one test process.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	reads    *prometheus.CounterVec
	refused  prometheus.Counter
	stale    prometheus.Histogram
}

// NewMetrics creates the API metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialkv_requests_total", Help: "Requests served, by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dialkv_request_duration_seconds", Help: "Request latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"method"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialkv_reads_total", Help: "Reads served, by consistency level.",
		}, []string{"level"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialkv_bounded_reads_refused_total", Help: "Bounded and session reads this replica refused as too stale.",
		}),
		stale: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dialkv_read_staleness_ms", Help: "Staleness bound of weaker-level reads served, in milliseconds.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000},
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.reads, m.refused, m.stale)
	return m
}

func (m *Metrics) observe(method string, start time.Time, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// observeStream counts a stream that ended (a watch): by method and code
// only, since its duration is how long the client watched, not latency.
func (m *Metrics) observeStream(method string, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
}

func (m *Metrics) observeRead(h *kvpb.ReadHeader) {
	if h == nil {
		return
	}
	m.reads.WithLabelValues(levelName(h.Consistency)).Inc()
	if h.StalenessMs > 0 {
		m.stale.Observe(float64(h.StalenessMs))
	}
}
