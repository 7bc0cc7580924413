package replication_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

func txnPut(k, v string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func txnGet(k string) *kvpb.TxnOp {
	return &kvpb.TxnOp{Op: &kvpb.TxnOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}}
}

func valueIs(k, v string) *kvpb.Compare {
	return &kvpb.Compare{Key: []byte(k), Target: kvpb.Compare_TARGET_VALUE, Result: kvpb.Compare_RESULT_EQUAL, Value: []byte(v)}
}

func (c *testCluster) txn(i int, req *kvpb.TxnRequest) *kvpb.TxnResponse {
	c.t.Helper()
	resp, err := c.nodes[i].Txn(context.Background(), req)
	if err != nil {
		c.t.Fatalf("txn on n%d: %v", i+1, err)
	}
	return resp
}

func (c *testCluster) value(i int, key string) string {
	c.t.Helper()
	resp, err := c.get(i, key, nil)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(resp.Kv.Value)
}

// A transaction in one range and one across two ranges: compares decide
// the branch, writes land atomically, gets see the state, the watch sees
// the writes, and TxnStatus knows the outcome.
func TestTxn_OneRangeAndAcrossRanges(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "acct/a", "100")
	c.mustPut(l, "acct/m", "0")
	c.split(l, "acct/m")
	c.eventually("two user ranges", 10*time.Second, func() bool { return len(c.ranges(l).Ranges) == 2 })
	w := startWatch(t, c, (l+1)%3, &kvpb.WatchRequest{Prefix: []byte("acct/")})

	// One range: a failed compare runs the failure branch.
	resp := c.txn((l+1)%3, &kvpb.TxnRequest{
		Compares: []*kvpb.Compare{valueIs("acct/a", "99")},
		Success:  []*kvpb.TxnOp{txnPut("acct/a", "wrong")},
		Failure:  []*kvpb.TxnOp{txnGet("acct/a")},
	})
	if resp.Succeeded || len(resp.Results) != 1 || string(resp.Results[0].GetGet().GetKv().GetValue()) != "100" {
		t.Fatalf("single-range txn with a failing compare: %v", resp)
	}

	// Across ranges: a transfer.
	resp = c.txn((l+2)%3, &kvpb.TxnRequest{
		Id:       "transfer-1",
		Compares: []*kvpb.Compare{valueIs("acct/a", "100"), valueIs("acct/m", "0")},
		Success:  []*kvpb.TxnOp{txnPut("acct/a", "70"), txnPut("acct/m", "30"), txnGet("acct/m")},
	})
	if !resp.Succeeded || len(resp.Headers) != 2 {
		t.Fatalf("cross-range transfer: %v", resp)
	}
	if got := string(resp.Results[2].GetGet().GetKv().GetValue()); got != "30" {
		t.Errorf("a get after a put of the same key in the transaction saw %q, want 30", got)
	}
	for i := range c.nodes {
		if a, m := c.value(i, "acct/a"), c.value(i, "acct/m"); a != "70" || m != "30" {
			t.Errorf("via n%d: a=%s m=%s, want 70 and 30", i+1, a, m)
		}
	}
	st, err := c.nodes[l].TxnStatus(context.Background(), &kvpb.TxnStatusRequest{Id: "transfer-1"})
	if err != nil || st.State != kvpb.TxnState_TXN_STATE_COMMITTED || !st.Succeeded {
		t.Errorf("status of the transfer: %v, %v", st, err)
	}
	c.eventually("the watch sees both writes", 10*time.Second, func() bool {
		evs, _ := w.snapshot()
		n := 0
		for _, e := range evs {
			if string(e.Value) == "70" || string(e.Value) == "30" {
				n++
			}
		}
		return n == 2
	})
	// No locks are left behind: the leaders resolved before answering,
	// and every follower applies the same resolve soon after.
	c.eventually("no replica holds a lock", 10*time.Second, func() bool {
		for _, n := range c.nodes {
			for _, s := range n.Shards() {
				if len(s.FSM().Locks()) > 0 {
					return false
				}
			}
		}
		return true
	})
}

// Concurrent transfers between accounts in two ranges never lose or make
// money: every transaction reads both balances and writes both, and the
// total stays what it was.
func TestTxn_ConcurrentTransfersKeepTheTotal(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	accounts := []string{"b/0", "b/1", "b/2", "b/3"}
	for _, a := range accounts {
		c.mustPut(l, a, "100")
	}
	c.split(l, "b/2")
	c.eventually("two user ranges", 10*time.Second, func() bool { return len(c.ranges(l).Ranges) == 2 })

	var wg sync.WaitGroup
	var mu sync.Mutex
	committed, conflicts := 0, 0
	for worker := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				from, to := accounts[(worker+i)%4], accounts[(worker+i+2)%4] // always across the split
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := c.nodes[(worker+i)%3].Txn(ctx, &kvpb.TxnRequest{Success: []*kvpb.TxnOp{txnGet(from), txnGet(to)}})
				if err != nil {
					cancel()
					mu.Lock()
					conflicts++
					mu.Unlock()
					continue
				}
				fv, _ := strconv.Atoi(string(r.Results[0].GetGet().GetKv().GetValue()))
				tv, _ := strconv.Atoi(string(r.Results[1].GetGet().GetKv().GetValue()))
				_, err = c.nodes[(worker+i)%3].Txn(ctx, &kvpb.TxnRequest{
					Compares: []*kvpb.Compare{valueIs(from, strconv.Itoa(fv)), valueIs(to, strconv.Itoa(tv))},
					Success:  []*kvpb.TxnOp{txnPut(from, strconv.Itoa(fv-5)), txnPut(to, strconv.Itoa(tv+5))},
				})
				cancel()
				mu.Lock()
				if err != nil {
					conflicts++
				} else {
					committed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := 0
	var got []string
	for _, a := range accounts {
		v, err := strconv.Atoi(c.value(l, a))
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		total += v
		got = append(got, fmt.Sprintf("%s=%d", a, v))
	}
	t.Logf("committed %d, conflicts %d; %v", committed, conflicts, got)
	if total != 400 {
		t.Errorf("total %d after the transfers, want 400 (%v)", total, got)
	}
	if committed == 0 {
		t.Error("no transaction committed")
	}
}
