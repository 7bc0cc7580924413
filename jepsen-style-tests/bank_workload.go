package jepsen

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// WorkloadBank: accounts under BankPrefix over several ranges, transfers
// between them as transactions, read-all transactions (checker_bank.go).
const WorkloadBank = "bank"

// BankPrefix holds the bank's accounts, BankPrefix+"<i>".
const BankPrefix = "bank/"

// Operation kinds of the bank workload.
const (
	// OpBankInit: the initial balances (Writes), written in one
	// transaction before the workload starts.
	OpBankInit = "bank-init"
	// OpTransfer moves money between two accounts: compares that both
	// hold the balances read just before (Compared), puts of the new ones
	// (Writes). Ok and not Succeeded: a balance had changed meanwhile.
	OpTransfer = "transfer"
	// OpReadAll reads every account in one transaction (Reads).
	OpReadAll = "read-all"
)

// BankConfig shapes the bank workload.
type BankConfig struct {
	// Accounts (default 8), each starting with Initial (default 100);
	// Clients (default 4) transfer at most MaxTransfer (default 5) at a
	// time, and a ReadRatio (default 0.3) of their transactions read all.
	Accounts    int
	Initial     int64
	Clients     int
	MaxTransfer int64
	ReadRatio   float64
}

func (b *BankConfig) setDefaults() {
	if b.Accounts == 0 {
		b.Accounts = 8
	}
	if b.Initial == 0 {
		b.Initial = 100
	}
	if b.Clients == 0 {
		b.Clients = 4
	}
	if b.MaxTransfer == 0 {
		b.MaxTransfer = 5
	}
	if b.ReadRatio == 0 {
		b.ReadRatio = 0.3
	}
}

func bankKey(i int) string { return BankPrefix + strconv.Itoa(i) }

// bank is one run of the bank workload.
type bank struct {
	cfg     BankConfig
	keys    []string
	cs      *Conns
	rec     *Recorder
	timeout time.Duration
	think   time.Duration
	wg      sync.WaitGroup
}

func newBank(cfg BankConfig, cs *Conns, timeout, think time.Duration) *bank {
	b := &bank{cfg: cfg, cs: cs, timeout: timeout, think: think}
	for i := range cfg.Accounts {
		b.keys = append(b.keys, bankKey(i))
	}
	return b
}

// splitPoints put the accounts over 4 ranges (bank/2, bank/4, bank/6 for
// 8 accounts), highest first as presplit wants them.
func (b *bank) splitPoints() []string {
	var out []string
	for j := 1; j < 4; j++ {
		if i := j * b.cfg.Accounts / 4; i > 0 {
			out = append(out, bankKey(i))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	slices.Reverse(out)
	return out
}

// setup writes every account's initial balance in one transaction (on
// condition that none exists, so that a retry is harmless), then checks
// with a read-all that they hold it, and records OpBankInit.
func (b *bank) setup(ctx context.Context) error {
	init := fmt.Sprint(b.cfg.Initial)
	req := &kvpb.TxnRequest{}
	writes := map[string]string{}
	for _, k := range b.keys {
		req.Compares = append(req.Compares, compareValue(k, ""))
		req.Success = append(req.Success, txnPut(k, init))
		writes[k] = init
	}
	var last string
	for a := range 20 {
		start := b.rec.Now()
		req.Id = fmt.Sprintf("bank-init-%d", a)
		node := a % len(b.cs.kv)
		_, op := b.cs.sendTxn(ctx, node, req, true, 5*time.Second)
		b.cs.settle(ctx, b.rec, &op, b.keys[0], node)
		reads, rop := b.cs.readKeys(ctx, node, fmt.Sprintf("bank-init-check-%d", a), b.keys, 5*time.Second)
		switch {
		case reads == nil:
			last = fmt.Sprintf("init %s, check %s", op.Error, rop.Error)
		case maps.Equal(reads, writes):
			b.rec.Add(Op{Process: TxnSetupProcess, F: OpBankInit, TxnID: req.Id, Writes: writes, Start: start, End: b.rec.Now(), Type: OK, Node: op.Node, API: APIGRPC})
			return nil
		default:
			missing := 0
			for _, v := range reads {
				if v == "" {
					missing++
				}
			}
			if missing != len(reads) {
				return fmt.Errorf("jepsen: bank setup: after transaction %s the accounts hold %v: half a transaction", req.Id, reads)
			}
			last = "nothing written: " + op.Error
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("jepsen: bank setup: the initial balances were not written in 20 tries; last: %s", last)
}

// start runs the clients, numbered from firstProc, until ctx is done.
func (b *bank) start(ctx context.Context, seed uint64, firstProc int) {
	for i := range b.cfg.Clients {
		proc := firstProc + i
		rng := rand.New(rand.NewPCG(seed, uint64(proc)+1))
		b.wg.Go(func() { b.client(ctx, proc, rng) })
	}
}

func (b *bank) wait() { b.wg.Wait() }

func (b *bank) client(ctx context.Context, proc int, rng *rand.Rand) {
	for seq := 0; ctx.Err() == nil; seq++ {
		node := rng.IntN(len(b.cs.kv))
		id := txnID(WorkloadBank, proc, seq)
		if rng.Float64() < b.cfg.ReadRatio {
			start := b.rec.Now()
			_, op := b.cs.readKeys(ctx, node, id, b.keys, b.timeout)
			op.F, op.Process, op.Start, op.End = OpReadAll, proc, start, b.rec.Now()
			b.rec.Add(op)
		} else if req, op, err := b.transfer(ctx, rng, node, id, -1); err == nil {
			start := b.rec.Now()
			_, res := b.cs.sendTxn(ctx, node, req, true, b.timeout)
			b.cs.settle(ctx, b.rec, &res, op.Key, node)
			res.F, res.Key, res.Compared, res.Writes, res.Process, res.Start = op.F, op.Key, op.Compared, op.Writes, proc, start
			if res.Resolved == "" {
				res.End = b.rec.Now()
			}
			b.rec.Add(res)
		}
		sleepCtx(ctx, time.Duration(rng.Int64N(int64(2*b.think)+1)))
	}
}

// transfer reads two accounts through node and builds a transfer between
// them: from the richer part of a random pair, conditional on both
// balances. With half >= 0 the accounts come from different halves of the
// bank, so from different ranges (kill-coordinator wants a cross-range
// transaction).
func (b *bank) transfer(ctx context.Context, rng *rand.Rand, node int, id string, half int) (*kvpb.TxnRequest, Op, error) {
	n := len(b.keys)
	i, j := rng.IntN(n), rng.IntN(n-1)
	if j >= i {
		j++
	}
	if half >= 0 {
		i, j = rng.IntN(n/2), n/2+rng.IntN(n-n/2)
	}
	from, to := b.keys[i], b.keys[j]
	reads, op := b.cs.readKeys(ctx, node, id+"-read", []string{from, to}, b.timeout)
	if reads == nil {
		return nil, Op{}, fmt.Errorf("jepsen: bank: reading %s and %s: %s", from, to, op.Error)
	}
	fb, err1 := strconv.ParseInt(reads[from], 10, 64)
	tb, err2 := strconv.ParseInt(reads[to], 10, 64)
	if err1 != nil || err2 != nil {
		return nil, Op{}, fmt.Errorf("jepsen: bank: balances %q, %q do not parse", reads[from], reads[to])
	}
	if fb < tb {
		from, to, fb, tb = to, from, tb, fb
	}
	if fb <= 0 {
		return nil, Op{}, fmt.Errorf("jepsen: bank: %s and %s are both empty", from, to)
	}
	amount := 1 + rng.Int64N(min(fb, b.cfg.MaxTransfer))
	nf, nt := fmt.Sprint(fb-amount), fmt.Sprint(tb+amount)
	req := &kvpb.TxnRequest{
		Id:       id,
		Compares: []*kvpb.Compare{compareValue(from, reads[from]), compareValue(to, reads[to])},
		Success:  []*kvpb.TxnOp{txnPut(from, nf), txnPut(to, nt)},
	}
	return req, Op{F: OpTransfer, Key: from,
		Compared: map[string]string{from: reads[from], to: reads[to]},
		Writes:   map[string]string{from: nf, to: nt}}, nil
}

// crossTxn is the kill-coordinator nemesis's transfer: between accounts
// of different ranges.
func (b *bank) crossTxn(ctx context.Context, rng *rand.Rand, node int) (*kvpb.TxnRequest, Op, error) {
	return b.transfer(ctx, rng, node, fmt.Sprintf("%s-kc-%d", WorkloadBank, rng.Uint64()), 0)
}

// final reads every account after the heal, within 15 s.
func (b *bank) final(ctx context.Context, logf func(string, ...any)) {
	finalTxnRead(ctx, b.cs, b.rec, OpReadAll, b.keys, 15*time.Second, logf)
}
