package api

import (
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// Metrics are the API's Prometheus series. Each node registers its own in
// its own registry, so several nodes can share one test process.
type Metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	readLatency *prometheus.HistogramVec
	reads       *prometheus.CounterVec
	refused     prometheus.Counter
	stale       *prometheus.HistogramVec
	watches     prometheus.Gauge
}

// NewMetrics creates the API metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	latencyBuckets := prometheus.ExponentialBuckets(0.0001, 2, 16)
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialkv_requests_total", Help: "Requests served, by method and gRPC code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dialkv_request_duration_seconds", Help: "Request latency by method.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		readLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dialkv_read_duration_seconds", Help: "Latency of reads (Get, Scan) by method and the consistency level asked for, failed ones included.",
			Buckets: latencyBuckets,
		}, []string{"method", "level"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dialkv_reads_total", Help: "Reads served, by consistency level.",
		}, []string{"level"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dialkv_bounded_reads_refused_total", Help: "Bounded and session reads this replica refused as too stale.",
		}),
		stale: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dialkv_read_staleness_ms", Help: "Staleness bound of weaker-level reads served, in milliseconds, by consistency level.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000},
		}, []string{"level"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dialkv_watch_streams", Help: "Watch streams open on this node (clients' watches, not peers' WatchRange).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.readLatency, m.reads, m.refused, m.stale, m.watches)
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

// watchOpened counts an open watch stream until the returned func is
// called.
func (m *Metrics) watchOpened() (closed func()) {
	m.watches.Inc()
	return m.watches.Dec
}

// observeReadLatency is a read's latency by the level it asked for: the
// answer's header is missing when the read failed, and a failed bounded
// read's time is part of what that level costs.
func (m *Metrics) observeReadLatency(method string, o *kvpb.ReadOptions, start time.Time) {
	c := o.GetConsistency()
	if c == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		c = kvpb.Consistency_CONSISTENCY_LINEARIZABLE
	}
	// A level no client should send is one label, not one per number.
	level, ok := rpctypes.ConsistencyName(c)
	if !ok {
		level = "invalid"
	}
	m.readLatency.WithLabelValues(method, level).Observe(time.Since(start).Seconds())
}

func (m *Metrics) observeRead(h *kvpb.ReadHeader) {
	if h == nil {
		return
	}
	level := levelName(h.Consistency)
	m.reads.WithLabelValues(level).Inc()
	if h.StalenessMs > 0 {
		m.stale.WithLabelValues(level).Observe(float64(h.StalenessMs))
	}
}
