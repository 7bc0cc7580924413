package main

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dialkv/dialkv/bench/workload"
)

// probeOpTimeout bounds one probe put.
const probeOpTimeout = 10 * time.Second

// sample is one probe put: when it started, how long it took, and whether
// it failed.
type sample struct {
	at     time.Time
	took   time.Duration
	failed bool
	key    string
}

// probe is the light foreground load: puts of a value on random loaded
// keys, started at a fixed rate whether or not earlier ones have
// returned (at most maxProbeInFlight at once). A probe that waited for
// each put before starting the next would take fewer samples exactly
// when puts are slow (coordinated omission) and understate the p99 of a
// stall. Every sample is kept, so that windows can be cut afterwards by
// time.
type probe struct {
	put      func(ctx context.Context, key, val []byte) error
	keys     int
	value    []byte
	interval time.Duration

	mu      sync.Mutex
	samples []sample
	skipped []time.Time // ticks that found maxProbeInFlight puts out
}

// maxProbeInFlight bounds the probe's puts out at once: a cluster that
// stops answering is not buried under a queue of them.
const maxProbeInFlight = 64

func newProbe(put func(ctx context.Context, key, val []byte) error, keys, valueSize int, rate float64) *probe {
	p := &probe{put: put, keys: keys, value: make([]byte, valueSize), interval: time.Duration(float64(time.Second) / rate)}
	for i := range p.value {
		p.value[i] = 'p'
	}
	return p
}

// run starts puts until ctx ends, and returns once every put it started
// has returned.
func (p *probe) run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	t := time.NewTicker(p.interval)
	defer t.Stop()
	sem := make(chan struct{}, maxProbeInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var tick time.Time
		select {
		case <-ctx.Done():
			return
		case tick = <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			p.mu.Lock()
			p.skipped = append(p.skipped, tick)
			p.mu.Unlock()
			continue
		}
		key := workload.AppendKey(nil, workload.DefaultKeyPrefix, rng.IntN(p.keys))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p.putOne(ctx, key)
		}()
	}
}

func (p *probe) putOne(ctx context.Context, key []byte) {
	opCtx, cancel := context.WithTimeout(ctx, probeOpTimeout)
	began := time.Now()
	err := p.put(opCtx, key, p.value)
	took := time.Since(began)
	cancel()
	if ctx.Err() != nil {
		return // cut short by the end of the run, not failed
	}
	p.mu.Lock()
	p.samples = append(p.samples, sample{at: began, took: took, failed: err != nil, key: string(key)})
	p.mu.Unlock()
}

// probeStats is the probe over one window.
type probeStats struct {
	From   float64 `json:"from_s"` // window, in seconds from the 4th node's start
	To     float64 `json:"to_s"`
	Ops    int64   `json:"ops"`
	Errors int64   `json:"errors"`
	// Skipped counts the ticks in the window that found maxProbeInFlight
	// puts still out and started none.
	Skipped int64   `json:"skipped,omitempty"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// window summarises the puts that started in [from, to); zero is the
// reference the report's times count from.
func (p *probe) window(zero, from, to time.Time) probeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := workload.NewHistogram()
	st := probeStats{From: from.Sub(zero).Seconds(), To: to.Sub(zero).Seconds()}
	for _, s := range p.samples {
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		if s.failed {
			st.Errors++
			continue
		}
		// RecordValue fails only beyond the histogram's minute; a put is
		// bounded by probeOpTimeout.
		_ = h.RecordValue(max(s.took.Microseconds(), 1))
	}
	for _, at := range p.skipped {
		if !at.Before(from) && at.Before(to) {
			st.Skipped++
		}
	}
	sum := workload.Summarize(h, st.Errors, 0, to.Sub(from))
	st.Ops, st.P50Ms, st.P99Ms, st.MaxMs = sum.Ops, sum.P50Ms, sum.P99Ms, sum.MaxMs
	return st
}

// slowPut is a probe put that took at least the -slow threshold.
type slowPut struct {
	At     string  `json:"at"`   // wall clock, UTC
	AtSec  float64 `json:"at_s"` // from the 4th node's start
	Key    string  `json:"key"`
	Ms     float64 `json:"ms"`
	Failed bool    `json:"failed,omitempty"`
}

// slow lists the puts that started in [from, to) and took at least min
// (or failed), in time order, so they can be read beside the nodes' logs.
func (p *probe) slow(zero, from, to time.Time, min time.Duration) []slowPut {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []slowPut
	for _, s := range p.samples {
		if s.at.Before(from) || !s.at.Before(to) || (s.took < min && !s.failed) {
			continue
		}
		out = append(out, slowPut{At: s.at.UTC().Format("15:04:05.000"), AtSec: s.at.Sub(zero).Seconds(), Key: s.key, Ms: float64(s.took.Microseconds()) / 1000, Failed: s.failed})
	}
	return out
}
