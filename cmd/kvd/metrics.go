package main

import (
	"context"
	"strconv"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/dialkv/dialkv/replication/link"
	"github.com/dialkv/dialkv/shard"
	"github.com/prometheus/client_golang/prometheus"
)

// statusSource is the part of a node the range collector reads.
type statusSource interface {
	Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error)
}

// rangeCollector exports each hosted range's Raft progress at scrape time.
type rangeCollector struct {
	src                                    statusSource
	term, commit, applied, lastLog, leader *prometheus.Desc
	keys, size                             *prometheus.Desc
	appendFailures                         *prometheus.Desc
}

func newRangeCollector(src statusSource) *rangeCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("dialkv_range_"+name, help, []string{"range"}, nil)
	}
	return &rangeCollector{
		src:     src,
		term:    d("raft_term", "Current Raft term of the range replica."),
		commit:  d("commit_index", "Raft commit index known to the replica."),
		applied: d("applied_index", "Index applied to the replica's state machine."),
		lastLog: d("last_log_index", "Last index in the replica's Raft log."),
		leader:  d("is_leader", "1 when this replica leads the range."),
		keys:    d("keys", "Keys committed to the replica's bbolt bucket."),
		size:    d("size_bytes", "Bytes of keys and values committed to the replica's bbolt bucket."),
		appendFailures: prometheus.NewDesc("dialkv_raft_append_failures_total",
			"Appends the range replica's Raft log refused since the node started; one that keeps rising has stopped taking its leader's entries.",
			[]string{"range"}, nil),
	}
}

func (c *rangeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.commit, c.applied, c.lastLog, c.leader, c.keys, c.size, c.appendFailures} {
		ch <- d
	}
}

func (c *rangeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.src.Status(context.Background(), &kvpb.StatusRequest{})
	if err != nil {
		return
	}
	for _, r := range st.Node.Ranges {
		id := strconv.FormatUint(r.Id, 10)
		leader := 0.0
		if r.State == "Leader" {
			leader = 1
		}
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, id)
		}
		g(c.term, float64(r.Term))
		g(c.commit, float64(r.CommitIndex))
		g(c.applied, float64(r.AppliedIndex))
		g(c.lastLog, float64(r.LastLogIndex))
		g(c.leader, leader)
		g(c.keys, float64(r.Keys))
		g(c.size, float64(r.SizeBytes))
		ch <- prometheus.MustNewConstMetric(c.appendFailures, prometheus.CounterValue, float64(r.AppendFailures), id)
	}
}

// walSource is the part of a node the WAL collector reads.
type walSource interface {
	WALStats() wal.Stats
}

// walCollector exports the node's write-ahead log counters at scrape
// time: the log every range appends to, so its fsyncs per append show
// how well ranges share them.
type walCollector struct {
	src                                    walSource
	fsyncs, appends, fileWrites, written   *prometheus.Desc
	rewritten                              *prometheus.Desc
	collections, segments, bytes, lastSync *prometheus.Desc
	fsync                                  *prometheus.Desc
}

func newWALCollector(src walSource) *walCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("dialkv_wal_"+name, help, nil, nil)
	}
	return &walCollector{
		src:         src,
		fsyncs:      d("fsyncs_total", "File syncs of the node's write-ahead log: group commits, sealed and new segments, the floor file."),
		appends:     d("appends_total", "Records appended to the write-ahead log: a range's batch of entries, a cut, a stable value, a collector's copy."),
		fileWrites:  d("file_writes_total", "Writes that put those records in the log's files: the appends a group commit covers go in one."),
		written:     d("written_bytes_total", "Bytes appended to the write-ahead log, the collector's copies included."),
		rewritten:   d("collector_copied_bytes_total", "Live bytes the collector copied out of old segments so that they could be freed."),
		collections: d("collector_freed_segments_total", "Segments the collector freed."),
		segments:    d("segments", "Segment files of the write-ahead log, the active one included."),
		bytes:       d("segment_bytes", "Bytes written into the write-ahead log's segment files now on disk."),
		lastSync:    d("last_sync_seconds", "How long the write-ahead log's last group commit fsync took."),
		fsync:       d("fsync_duration_seconds", "How long the write-ahead log's group commit fsyncs took: every acknowledged write waited for one."),
	}
}

func (c *walCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.fsyncs, c.appends, c.fileWrites, c.written, c.rewritten, c.collections, c.segments, c.bytes, c.lastSync, c.fsync} {
		ch <- d
	}
}

func (c *walCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.WALStats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.fsyncs, st.Syncs)
	counter(c.appends, st.Writes)
	counter(c.fileWrites, st.FileWrites)
	counter(c.written, st.WrittenBytes)
	counter(c.rewritten, st.RewrittenBytes)
	counter(c.collections, st.Collections)
	gauge(c.segments, float64(st.Segments))
	gauge(c.bytes, float64(st.Bytes))
	gauge(c.lastSync, st.LastSync.Seconds())
	// Prometheus buckets are cumulative; the log counts each on its own.
	buckets := make(map[float64]uint64, len(st.SyncHistogram))
	var n uint64
	for i, bound := range wal.SyncBuckets() {
		n += st.SyncHistogram[i]
		buckets[bound.Seconds()] = n
	}
	n += st.SyncHistogram[len(st.SyncHistogram)-1]
	ch <- prometheus.MustNewConstHistogram(c.fsync, n, st.SyncTime.Seconds(), buckets)
}

// linkSource is the part of a node the link collector reads.
type linkSource interface {
	LinkStats() (link.Stats, bool)
}

// linkCollector exports the counters of the node's shared Raft link at
// scrape time: messages per write shows how well ranges share writes, and
// the legacy counters show when the last node speaking only per-range
// streams is gone. Nothing is exported with --per-range-streams.
type linkCollector struct {
	src  linkSource
	desc map[string]*prometheus.Desc
}

// linkCounters names each exported counter and reads it from Stats.
var linkCounters = []struct {
	name, help string
	value      func(link.Stats) uint64
}{
	{"messages_sent_total", "Raft requests, responses and pings the node's link wrote to its peers.", func(s link.Stats) uint64 { return s.MessagesSent }},
	{"writes_total", "Vectored socket writes that carried them: messages per write is the batching.", func(s link.Stats) uint64 { return s.Writes }},
	{"sent_bytes_total", "Bytes the link wrote, frame headers included.", func(s link.Stats) uint64 { return s.BytesSent }},
	{"messages_received_total", "Raft messages the link read from its peers.", func(s link.Stats) uint64 { return s.MessagesReceived }},
	{"received_bytes_total", "Bytes the link read.", func(s link.Stats) uint64 { return s.BytesReceived }},
	{"dials_total", "Connections the link opened (link and snapshot streams).", func(s link.Stats) uint64 { return s.Dials }},
	{"legacy_fallbacks_total", "Times a peer was found to speak only per-range streams (a node of an older release).", func(s link.Stats) uint64 { return s.LegacyFallbacks }},
	{"legacy_calls_total", "Calls sent through a range's per-range stream to such a peer.", func(s link.Stats) uint64 { return s.LegacyCalls }},
	{"legacy_received_total", "Raft RPCs that came in through per-range streams.", func(s link.Stats) uint64 { return s.LegacyReceived }},
	{"confirm_requests_total", "Leadership-question requests for linearizable reads that peers answered (link version 2).", func(s link.Stats) uint64 { return s.ConfirmRequests }},
	{"confirm_questions_total", "Ranges' questions those requests carried: questions per request is how many ranges share one.", func(s link.Stats) uint64 { return s.ConfirmQuestions }},
}

func newLinkCollector(src linkSource) *linkCollector {
	c := &linkCollector{src: src, desc: map[string]*prometheus.Desc{}}
	for _, m := range linkCounters {
		c.desc[m.name] = prometheus.NewDesc("dialkv_link_"+m.name, m.help, nil, nil)
	}
	return c
}

func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range linkCounters {
		ch <- c.desc[m.name]
	}
}

func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.src.LinkStats()
	if !ok {
		return
	}
	for _, m := range linkCounters {
		ch <- prometheus.MustNewConstMetric(c.desc[m.name], prometheus.CounterValue, float64(m.value(st)))
	}
}

// hostSource is the part of a node the host collector reads.
type hostSource interface {
	Shards() []*shard.Shard
	LiveLeases() int
}

// diskSpace is the size of the filesystem holding dir and the bytes an
// unprivileged process may still write there.
type diskSpace func(dir string) (size, available uint64, err error)

// hostCollector exports, at scrape time, what the node holds beyond each
// range's Raft progress: which replicas hibernate, the live leases, and
// the room left on the data filesystem.
type hostCollector struct {
	src                         hostSource
	dataDir                     string
	space                       diskSpace
	asleep, leases, size, avail *prometheus.Desc
}

func newHostCollector(src hostSource, dataDir string, space diskSpace) *hostCollector {
	return &hostCollector{
		src: src, dataDir: dataDir, space: space,
		asleep: prometheus.NewDesc("dialkv_range_asleep",
			"1 while the range replica hibernates (its Raft stopped; stale reads still served), else 0.", []string{"range"}, nil),
		leases: prometheus.NewDesc("dialkv_leases",
			"Live leases as this node's replica of the meta range has applied them (0 on a node without one).", nil, nil),
		size: prometheus.NewDesc("dialkv_disk_size_bytes",
			"Size of the filesystem holding --data-dir.", nil, nil),
		avail: prometheus.NewDesc("dialkv_disk_available_bytes",
			"Bytes kvd may still write on the filesystem holding --data-dir; under 64 MiB the node reports not ready.", nil, nil),
	}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.asleep, c.leases, c.size, c.avail} {
		ch <- d
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.src.Shards() {
		asleep := 0.0
		if s.Asleep() {
			asleep = 1
		}
		gauge(c.asleep, asleep, strconv.FormatUint(s.ID(), 10))
	}
	gauge(c.leases, float64(c.src.LiveLeases()))
	// A filesystem that cannot be asked exports nothing rather than a
	// zero that would read as a full disk.
	if size, avail, err := c.space(c.dataDir); err == nil {
		gauge(c.size, float64(size))
		gauge(c.avail, float64(avail))
	}
}
