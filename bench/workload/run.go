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
	opTxn
	numOps
)

// clientStats is what one client goroutine records, merged at the end.
type clientStats struct {
	hist   [numOps]*hdrhistogram.Histogram
	errs   [numOps]int64
	misses int64
	// failed counts transactions whose compare did not hold.
	failed int64
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
	if cfg.Workload == Txn {
		for _, d := range drivers {
			if _, ok := d.(TxnDriver); !ok {
				return nil, fmt.Errorf("workload: the %T driver runs no transactions", d)
			}
		}
	}
	p := &plan{cfg: cfg, keys: newKeyChooser(cfg)}
	stats := make([]*clientStats, cfg.Clients)
	start := time.Now()
	p.deadline = start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		cs := &clientStats{tally: errorTally{}}
		for k := range cs.hist {
			cs.hist[k] = NewHistogram()
		}
		stats[i] = cs
		wg.Go(func() { p.client(ctx, i, drivers[i%len(drivers)], cs) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	total := NewHistogram()
	var byOp [numOps]*hdrhistogram.Histogram
	for k := range byOp {
		byOp[k] = NewHistogram()
	}
	var errs [numOps]int64
	var misses, failed int64
	tally := errorTally{}
	for _, cs := range stats {
		for k := range byOp {
			byOp[k].Merge(cs.hist[k])
			total.Merge(cs.hist[k])
			errs[k] += cs.errs[k]
		}
		misses += cs.misses
		failed += cs.failed
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
		Total:        Summarize(total, errs[opPut]+errs[opGet]+errs[opTxn], misses, elapsed),
		ErrorSamples: tally.top(),
	}
	if cfg.Workload == Txn {
		res.TxnKeys = cfg.TxnKeys
		res.Total.CompareFailed = failed
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
	var txn *txnClient
	if cfg.Workload == Txn {
		// Run checked that every driver runs transactions.
		txn = newTxnClient(cfg, id, d.(TxnDriver))
	}
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
		}
		if cfg.Workload != Load && cfg.Workload != Txn {
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
		case Txn:
			kind = opTxn
		}
		key = AppendKey(key[:0], cfg.KeyPrefix, idx)
		if kind != opGet && len(value) > 0 {
			// Vary the value a little, so no two writes are alike.
			value[n%int64(len(value))] = 'a' + byte(n%26)
		}

		opCtx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		began := time.Now()
		var err error
		switch kind {
		case opPut:
			err = d.Put(opCtx, key, value)
		case opGet:
			err = d.Get(opCtx, key, cfg.Level)
		case opTxn:
			var ok bool
			if ok, err = txn.run(opCtx, value); err == nil && !ok {
				cs.failed++
			}
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

// txnClient is one client's side of the Txn workload: its keys, and what
// it believes the first of them holds.
type txnClient struct {
	d    TxnDriver
	keys [][]byte
	// expect is the value the next compare expects of keys[0]; nil: that
	// the key does not exist. It starts nil, so a client's first
	// transaction in a loaded store fails its compare and learns the value.
	expect []byte
	buf    []byte // expect's storage, never nil
}

func newTxnClient(cfg Config, id int, d TxnDriver) *txnClient {
	t := &txnClient{d: d, buf: make([]byte, 0, cfg.ValueSize)}
	for _, i := range cfg.TxnKeyIndexes(id) {
		t.keys = append(t.keys, AppendKey(nil, cfg.KeyPrefix, i))
	}
	return t
}

// run runs one transaction writing val and says whether its compare held.
// After an error expect is kept: if the transaction did apply, the next
// compare fails and reads the value that is there.
func (t *txnClient) run(ctx context.Context, val []byte) (bool, error) {
	ok, cur, err := t.d.Txn(ctx, t.keys, t.expect, val)
	switch {
	case err != nil:
		return false, err
	case ok:
		t.expect = append(t.buf[:0], val...)
	case cur == nil:
		t.expect = nil
	default:
		t.expect = append(t.buf[:0], cur...)
	}
	if t.expect != nil {
		t.buf = t.expect
	}
	return ok, nil
}
