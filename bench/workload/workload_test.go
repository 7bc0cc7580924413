package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDriver is an in-memory Driver that counts what it is asked.
type memDriver struct {
	mu         sync.Mutex
	data       map[string][]byte
	puts, gets int
	txns       int
	txnsBy     map[string]int // transactions by first key
	levels     map[Level]int
	putErr     error
}

func newMemDriver() *memDriver {
	return &memDriver{data: map[string][]byte{}, levels: map[Level]int{}, txnsBy: map[string]int{}}
}

func (d *memDriver) Put(_ context.Context, key, val []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.puts++
	if d.putErr != nil {
		return d.putErr
	}
	d.data[string(key)] = append([]byte(nil), val...)
	return nil
}

func (d *memDriver) Get(_ context.Context, key []byte, level Level) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gets++
	d.levels[level]++
	if _, ok := d.data[string(key)]; !ok {
		return ErrNotFound
	}
	return nil
}

func (d *memDriver) Txn(_ context.Context, keys [][]byte, expect, val []byte) (bool, []byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txns++
	d.txnsBy[string(keys[0])]++
	cur, ok := d.data[string(keys[0])]
	if ok != (expect != nil) || !bytes.Equal(cur, expect) {
		return false, cur, nil
	}
	for _, k := range keys {
		d.data[string(k)] = append([]byte{}, val...)
	}
	return true, nil, nil
}

func (d *memDriver) Close() error { return nil }

func testConfig(kind Kind) Config {
	cfg := DefaultConfig()
	cfg.Workload = kind
	cfg.Clients = 4
	cfg.Keys = 100
	cfg.ValueSize = 16
	cfg.Duration = 10 * time.Second
	return cfg
}

func mustRun(t *testing.T, cfg Config, drivers ...Driver) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg, drivers)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func TestRun_LoadWritesEveryKeyOnce(t *testing.T) {
	d := newMemDriver()
	res := mustRun(t, testConfig(Load), d)
	if !res.Complete || res.Total.Ops != 100 || res.Total.Errors != 0 {
		t.Fatalf("load: complete=%v ops=%d errors=%d, want true/100/0", res.Complete, res.Total.Ops, res.Total.Errors)
	}
	if d.puts != 100 || len(d.data) != 100 {
		t.Fatalf("driver saw %d puts of %d distinct keys, want 100 and 100", d.puts, len(d.data))
	}
	for i := range 100 {
		k := string(AppendKey(nil, DefaultKeyPrefix, i))
		if v := d.data[k]; len(v) != 16 {
			t.Fatalf("key %s has a %d-byte value, want 16", k, len(v))
		}
	}
}

func TestRun_OpsBoundStopsTheRun(t *testing.T) {
	cfg := testConfig(Put)
	cfg.Ops = 250
	d := newMemDriver()
	res := mustRun(t, cfg, d, d)
	if !res.Complete || res.Total.Ops != 250 || d.puts != 250 {
		t.Fatalf("complete=%v ops=%d driver puts=%d, want true, 250, 250", res.Complete, res.Total.Ops, d.puts)
	}
	if res.Conns != 2 || res.Clients != 4 {
		t.Fatalf("conns=%d clients=%d, want 2 and 4", res.Conns, res.Clients)
	}
}

func TestRun_DurationBoundsTheRun(t *testing.T) {
	cfg := testConfig(Get)
	cfg.Duration = 200 * time.Millisecond
	cfg.Level = Stale
	d := newMemDriver()
	began := time.Now()
	res := mustRun(t, cfg, d)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("a 200ms run took %v", took)
	}
	// Nothing was loaded: every get is a miss, not an error.
	if res.Total.Ops == 0 || res.Total.Misses != res.Total.Ops || res.Total.Errors != 0 {
		t.Fatalf("ops=%d misses=%d errors=%d, want ops>0, all misses, no errors", res.Total.Ops, res.Total.Misses, res.Total.Errors)
	}
	if d.levels[Stale] != d.gets {
		t.Fatalf("levels %v, want every get stale", d.levels)
	}
}

func TestRun_MixedSplitsByReadRatio(t *testing.T) {
	cfg := testConfig(Mixed)
	cfg.Ops = 4000
	cfg.ReadRatio = 0.95
	d := newMemDriver()
	res := mustRun(t, cfg, d)
	if res.Put == nil || res.Get == nil {
		t.Fatal("mixed result lacks per-op stats")
	}
	if res.Put.Ops+res.Get.Ops != 4000 {
		t.Fatalf("put %d + get %d != 4000", res.Put.Ops, res.Get.Ops)
	}
	if frac := float64(res.Get.Ops) / 4000; frac < 0.9 || frac > 0.99 {
		t.Fatalf("get fraction %.3f, want about 0.95", frac)
	}
}

func TestRun_ErrorsAreCountedAndSampled(t *testing.T) {
	cfg := testConfig(Put)
	cfg.Ops = 50
	d := newMemDriver()
	d.putErr = errors.New("disk on fire")
	res := mustRun(t, cfg, d)
	if res.Total.Ops != 0 || res.Total.Errors != 50 {
		t.Fatalf("ops=%d errors=%d, want 0 and 50", res.Total.Ops, res.Total.Errors)
	}
	if len(res.ErrorSamples) != 1 || res.ErrorSamples[0].Message != "disk on fire" || res.ErrorSamples[0].Count != 50 {
		t.Fatalf("error samples %+v", res.ErrorSamples)
	}
}

func TestRun_CancelledRunIsIncompleteAndErrorFree(t *testing.T) {
	cfg := testConfig(Put)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, cfg, []Driver{blockingDriver{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Total.Errors != 0 {
		t.Fatalf("complete=%v errors=%d, want false and 0", res.Complete, res.Total.Errors)
	}
}

// blockingDriver blocks every operation until its context ends.
type blockingDriver struct{}

func (blockingDriver) Put(ctx context.Context, _, _ []byte) error { <-ctx.Done(); return ctx.Err() }
func (blockingDriver) Get(ctx context.Context, _ []byte, _ Level) error {
	<-ctx.Done()
	return ctx.Err()
}
func (blockingDriver) Close() error { return nil }

func TestResult_HistogramRoundTripsAndTablePrints(t *testing.T) {
	cfg := testConfig(Mixed)
	cfg.Ops = 500
	res := mustRun(t, cfg, newMemDriver())
	h, err := DecodeHistogram(res.Histogram)
	if err != nil {
		t.Fatal(err)
	}
	if h.TotalCount() != res.Total.Ops {
		t.Fatalf("histogram holds %d values, result says %d ops", h.TotalCount(), res.Total.Ops)
	}
	var b strings.Builder
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99 ms", "put", "get", "total"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestConfig_ValidateRejectsNonsense(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"workload": func(c *Config) { c.Workload = "scan" },
		"ratio":    func(c *Config) { c.ReadRatio = 1.5 },
		"clients":  func(c *Config) { c.Clients = 0 },
		"keys":     func(c *Config) { c.Keys = 0 },
		"zipf":     func(c *Config) { c.Zipf = 1 },
		"duration": func(c *Config) { c.Duration = 0 },
		"level":    func(c *Config) { c.Level = "eventual" },
		"txn keys": func(c *Config) { c.Workload, c.TxnKeys = Txn, 0 },
		"txn many": func(c *Config) { c.Workload, c.TxnKeys = Txn, MaxTxnKeys+1 },
		"txn zipf": func(c *Config) { c.Workload, c.Zipf = Txn, 0.99 },
		// 16 clients with 2 keys each need 32 keys.
		"txn key space": func(c *Config) { c.Workload, c.Keys = Txn, 31 },
	} {
		cfg := DefaultConfig()
		mut(&cfg)
		if cfg.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

func TestZipfian_StaysInRangeAndIsSkewed(t *testing.T) {
	const n = 1000
	z := newZipfian(n, 0.99)
	r := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, n)
	const draws = 100000
	for range draws {
		k := z.next(r)
		if k < 0 || k >= n {
			t.Fatalf("key index %d out of [0, %d)", k, n)
		}
		counts[k]++
	}
	// The hottest key of a 0.99 zipfian over 1000 keys takes about 13% of
	// draws; a uniform one would take 0.1%.
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	if top < draws/20 {
		t.Fatalf("hottest key drawn %d of %d times: not skewed", top, draws)
	}
}

func TestAppendKey_PadsAndSorts(t *testing.T) {
	if got := string(AppendKey(nil, "k/", 42)); got != "k/0000000042" {
		t.Fatalf("AppendKey = %q", got)
	}
	a, b := AppendKey(nil, "", 9), AppendKey(nil, "", 10)
	if string(a) >= string(b) {
		t.Fatalf("%s does not sort before %s", a, b)
	}
}

func TestParseLevel_AcceptsEtcdNames(t *testing.T) {
	for in, want := range map[string]Level{"l": Linearizable, "s": Stale, "": Linearizable, "Bounded": Bounded, "session": Session} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("weak"); err == nil {
		t.Error("ParseLevel accepted weak")
	}
}

func ExampleAppendKey() {
	fmt.Println(string(AppendKey(nil, DefaultKeyPrefix, 7)))
	// Output: kvbench/0000000007
}

func TestRun_TxnKeepsEachClientsKeysInStep(t *testing.T) {
	cfg := testConfig(Txn)
	cfg.TxnKeys = 3
	cfg.Ops = 400
	d := newMemDriver()
	// A loaded store: each client's first compare (key absent) fails and
	// reads the value; every later one holds.
	for i := range cfg.Keys {
		d.data[string(AppendKey(nil, cfg.KeyPrefix, i))] = []byte("loaded")
	}
	res := mustRun(t, cfg, d, d)
	if !res.Complete || res.Total.Ops != 400 || res.Total.Errors != 0 || d.txns != 400 {
		t.Fatalf("complete=%v ops=%d errors=%d driver txns=%d, want true, 400, 0, 400", res.Complete, res.Total.Ops, res.Total.Errors, d.txns)
	}
	// A client may start after the others took every operation.
	if res.Total.CompareFailed != int64(len(d.txnsBy)) || res.TxnKeys != 3 {
		t.Fatalf("compare failed %d, txn keys %d; want one per client that ran (%d) and 3", res.Total.CompareFailed, res.TxnKeys, len(d.txnsBy))
	}
	wrote := 0
	for id := range cfg.Clients {
		if d.txnsBy[string(AppendKey(nil, cfg.KeyPrefix, cfg.TxnKeyIndexes(id)[0]))] < 2 {
			continue // no transaction past the failed first
		}
		wrote++
		var first []byte
		for j, i := range cfg.TxnKeyIndexes(id) {
			v := d.data[string(AppendKey(nil, cfg.KeyPrefix, i))]
			if j == 0 {
				first = v
			}
			if string(v) == "loaded" || !bytes.Equal(v, first) {
				t.Fatalf("client %d key %d holds %q, its first key %q: want the same written value", id, i, v, first)
			}
		}
	}
	if wrote == 0 {
		t.Fatal("no client wrote its keys")
	}
	var b strings.Builder
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), fmt.Sprintf("compare failed: %d of 400", len(d.txnsBy))) {
		t.Fatalf("table lacks the failed compares:\n%s", b.String())
	}
}

func TestRun_TxnWantsATxnDriver(t *testing.T) {
	_, err := Run(context.Background(), testConfig(Txn), []Driver{blockingDriver{}})
	if err == nil || !strings.Contains(err.Error(), "runs no transactions") {
		t.Fatalf("err = %v, want a driver without Txn refused", err)
	}
}

func TestConfig_TxnKeyIndexesSpanOneRangeEachOnAnEvenSplit(t *testing.T) {
	for _, tc := range []struct {
		keys, clients, txnKeys, ranges int
	}{
		{10000, 64, 2, 16},
		{10000, 64, 4, 16},
		{10000, 64, 2, 2},
		{10000, 64, 4, 4},
		{500, 8, 4, 16},
		{128, 64, 2, 2}, // as many keys as the clients need, no more
	} {
		cfg := DefaultConfig()
		cfg.Workload, cfg.Keys, cfg.Clients, cfg.TxnKeys = Txn, tc.keys, tc.clients, tc.txnKeys
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		// Range r of an even split holds the indexes [keys*r/ranges,
		// keys*(r+1)/ranges), as layout.SplitKeys cuts them.
		rangeOf := func(i int) int {
			r := 0
			for r+1 < tc.ranges && i >= tc.keys*(r+1)/tc.ranges {
				r++
			}
			return r
		}
		seen := map[int]bool{}
		for id := range tc.clients {
			ranges := map[int]bool{}
			for _, i := range cfg.TxnKeyIndexes(id) {
				if i < 0 || i >= tc.keys || seen[i] {
					t.Fatalf("%+v: client %d key %d out of range or another client's", tc, id, i)
				}
				seen[i] = true
				ranges[rangeOf(i)] = true
			}
			if len(ranges) != tc.txnKeys {
				t.Fatalf("%+v: client %d's keys %v lie in %d ranges, want %d", tc, id, cfg.TxnKeyIndexes(id), len(ranges), tc.txnKeys)
			}
		}
	}
}
