package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// opKind is what one operation of a run does.
type opKind int

const (
	opPut opKind = iota
	opGet
)

// clientStats is what one client goroutine records, merged at the end.
type clientStats struct {
	hist   [2]*hdrhistogram.Histogram // by opKind
	errs   [2]int64
	misses int64
	tally  errorTally
}

// plan is the shared, read-only state of a run plus its two counters.
type plan struct {
	cfg      Config
	keys     keyChooser
	deadline time.Time
	issued   atomic.Int64 // operations started (Ops bound), or next Load index
}

// Run drives cfg's workload through drivers and returns its result.
// Client i uses drivers[i%len(drivers)], so len(drivers) is the number of
// connections. Run returns when the run's bound is reached or ctx ends;
// operations cut short by ctx are not counted.
func Run(ctx context.Context, cfg Config, drivers []Driver) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(drivers) == 0 {
		return nil, errors.New("workload: no drivers")
	}
	p := &plan{cfg: cfg, keys: newKeyChooser(cfg)}
	stats := make([]*clientStats, cfg.Clients)
	start := time.Now()
	p.deadline = start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		cs := &clientStats{tally: errorTally{}}
		cs.hist[opPut], cs.hist[opGet] = NewHistogram(), NewHistogram()
		stats[i] = cs
		wg.Go(func() { p.client(ctx, i, drivers[i%len(drivers)], cs) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	total, byOp := NewHistogram(), [2]*hdrhistogram.Histogram{NewHistogram(), NewHistogram()}
	var errs [2]int64
	var misses int64
	tally := errorTally{}
	for _, cs := range stats {
		for k := range byOp {
			byOp[k].Merge(cs.hist[k])
			total.Merge(cs.hist[k])
			errs[k] += cs.errs[k]
		}
		misses += cs.misses
		for m, c := range cs.tally {
			tally.add(m, c)
		}
	}
	res := &Result{
		Workload:     cfg.Workload,
		Distribution: cfg.Distribution(),
		Clients:      cfg.Clients,
		Conns:        len(drivers),
		Keys:         cfg.Keys,
		ValueSize:    cfg.ValueSize,
		ElapsedSec:   elapsed.Seconds(),
		Total:        Summarize(total, errs[opPut]+errs[opGet], misses, elapsed),
		ErrorSamples: tally.top(),
	}
	if cfg.Workload == Get || cfg.Workload == Mixed {
		res.Consistency = cfg.Level
	}
	if cfg.Workload == Mixed {
		res.ReadRatio = cfg.ReadRatio
		put := Summarize(byOp[opPut], errs[opPut], 0, elapsed)
		get := Summarize(byOp[opGet], errs[opGet], misses, elapsed)
		res.Put, res.Get = &put, &get
	}
	switch {
	case ctx.Err() != nil:
		res.Complete = false
	case cfg.Workload == Load:
		res.Complete = p.issued.Load() >= int64(cfg.Keys)
	case cfg.Ops > 0:
		res.Complete = p.issued.Load() >= cfg.Ops
	default:
		res.Complete = true
	}
	enc, err := EncodeHistogram(total)
	if err != nil {
		return nil, fmt.Errorf("workload: encode histogram: %w", err)
	}
	res.Histogram = enc
	return res, nil
}

// client is one closed-loop client: it runs until the deadline, the
// operation bound or ctx, one operation at a time.
func (p *plan) client(ctx context.Context, id int, d Driver, cs *clientStats) {
	cfg := p.cfg
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(id)))
	value := make([]byte, cfg.ValueSize)
	for i := range value {
		value[i] = 'a' + byte(rng.IntN(26))
	}
	key := make([]byte, 0, len(cfg.KeyPrefix)+keyWidth+10)
	for n := int64(0); ; n++ {
		if ctx.Err() != nil || !time.Now().Before(p.deadline) {
			return
		}
		var idx int
		switch {
		case cfg.Workload == Load:
			idx = int(p.issued.Add(1) - 1)
			if idx >= cfg.Keys {
				return
			}
		case cfg.Ops > 0:
			if p.issued.Add(1) > cfg.Ops {
				return
			}
			idx = p.keys.next(rng)
		default:
			idx = p.keys.next(rng)
		}
		kind := opPut
		switch cfg.Workload {
		case Get:
			kind = opGet
		case Mixed:
			if rng.Float64() < cfg.ReadRatio {
				kind = opGet
			}
		}
		key = AppendKey(key[:0], cfg.KeyPrefix, idx)
		if kind == opPut && len(value) > 0 {
			// Vary the value a little, so no two writes are alike.
			value[n%int64(len(value))] = 'a' + byte(n%26)
		}

		opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		began := time.Now()
		var err error
		if kind == opPut {
			err = d.Put(opCtx, key, value)
		} else {
			err = d.Get(opCtx, key, cfg.Level)
		}
		lat := time.Since(began)
		cancel()

		miss := kind == opGet && errors.Is(err, ErrNotFound)
		switch {
		case err == nil || miss:
			if miss {
				cs.misses++
			}
			// Clamped into the histogram's range, so RecordValue cannot fail.
			us := min(max(lat.Microseconds(), histMinMicros), histMaxMicros)
			_ = cs.hist[kind].RecordValue(us)
		case ctx.Err() != nil:
			return // cancelled, not failed
		default:
			cs.errs[kind]++
			cs.tally.add(err.Error(), 1)
		}
	}
}
