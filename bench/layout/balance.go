package layout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
)

// Bounds of BalanceLeaders and Wait.
const (
	// balanceRounds bounds the plan-move-check rounds of BalanceLeaders:
	// a round moves every surplus leadership at once, so one usually
	// suffices; more are needed only when elections or the cluster's own
	// placement driver move leaders meanwhile.
	balanceRounds = 10
	// transferTimeout bounds one TransferLeader call.
	transferTimeout = 10 * time.Second
	// roundSettle bounds the wait for a round's moves to show in the
	// nodes' Status.
	roundSettle = 15 * time.Second
	// readTimeout bounds one Read inside a wait.
	readTimeout = 10 * time.Second
	// defaultWait bounds Wait under a context without a deadline.
	defaultWait = 5 * time.Minute
)

// PollInterval is how often Wait reads the layout.
const PollInterval = 200 * time.Millisecond

// Move hands the leadership of range RangeID from node From to node To.
type Move struct {
	RangeID  uint64
	From, To string
}

// PlanLeaderMoves returns moves that leave every active node leading
// within one of every other, moving as few leaderships as it can: the
// nodes that lead most keep the L mod N extra leaderships, and ranges move
// from nodes above their target to a replica on the node furthest below
// its own, in range order. Ranges without a known leader stay where they
// are, and a range whose replicas include no node below target cannot
// move, so the plan may fall short; BalanceLeaders then plans again.
func PlanLeaderMoves(l *Layout) []Move {
	if len(l.Nodes) == 0 {
		return nil
	}
	// The meta range's leadership counts where it is, as kvd's placement
	// driver counts it (it moves one only when a node leads two more than
	// another): a plan balancing the user ranges alone could leave kvd a
	// leadership to move in the middle of a measurement.
	leads := func(n Node) int {
		if n.ID == l.MetaLeader {
			return n.Leaders + 1
		}
		return n.Leaders
	}
	// The meta leader's node takes one of the extra leaderships first:
	// then the user ranges' leaders end within one of each other too.
	nodes := slices.Clone(l.Nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int {
		if am, bm := a.ID == l.MetaLeader, b.ID == l.MetaLeader; am != bm {
			if am {
				return -1
			}
			return 1
		}
		return cmp.Compare(leads(b), leads(a))
	})
	total := 0
	for _, n := range nodes {
		total += leads(n)
	}
	surplus := map[string]int{}
	for i, n := range nodes {
		target := total / len(nodes)
		if i < total%len(nodes) {
			target++
		}
		surplus[n.ID] = leads(n) - target
	}
	var moves []Move
	for _, r := range l.Ranges {
		if surplus[r.Leader] <= 0 {
			continue
		}
		to := ""
		for _, id := range r.Replicas {
			if s, ok := surplus[id]; ok && s < 0 && (to == "" || s < surplus[to]) {
				to = id
			}
		}
		if to == "" {
			continue
		}
		surplus[r.Leader]--
		surplus[to]++
		moves = append(moves, Move{RangeID: r.ID, From: r.Leader, To: to})
	}
	return moves
}

// BalanceResult says what BalanceLeaders did.
type BalanceResult struct {
	Rounds, Moves, Failed int
	Elapsed               time.Duration
	// Layout is the balanced layout it ended with (the last one read, on
	// an error).
	Layout *Layout
}

// BalanceLeaders moves range leaderships (Cluster.TransferLeader) until
// every active node leads within one of every other, the meta range's
// leadership counted when its leader is known (LeadershipsBalanced, where
// kvd's placement driver stops moving them; else LeadersBalanced),
// reading the layout from the nodes before every round and after its
// moves. It waits for every range to have a leader the replicas confirm
// before it plans, and gives up after balanceRounds rounds or when ctx
// ends. Progress goes to log when it is not nil.
func BalanceLeaders(ctx context.Context, cli *client.Client, log io.Writer) (BalanceResult, error) {
	began := time.Now()
	var res BalanceResult
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	for {
		l, err := Wait(ctx, cli, (*Layout).LeadersSettled)
		res.Layout, res.Elapsed = l, time.Since(began)
		if err != nil {
			return res, fmt.Errorf("layout: before balancing round %d: %w", res.Rounds+1, err)
		}
		if l.balanced() {
			return res, nil
		}
		if res.Rounds >= balanceRounds {
			return res, fmt.Errorf("layout: leaders not balanced after %d rounds (%d moves, %d failed): %s", res.Rounds, res.Moves, res.Failed, l)
		}
		moves := PlanLeaderMoves(l)
		if len(moves) == 0 {
			return res, fmt.Errorf("layout: no leadership can move toward balance: %s", l)
		}
		res.Rounds++
		addrs := map[string]string{}
		for _, n := range l.Nodes {
			addrs[n.ID] = n.GRPCAddr
		}
		errs := make([]error, len(moves))
		var wg sync.WaitGroup
		for i, m := range moves {
			cc, err := conn(conns, addrs[m.From])
			if err != nil {
				errs[i] = err
				continue
			}
			wg.Go(func() { errs[i] = transfer(ctx, cc, m) })
		}
		wg.Wait()
		var moved []Move
		for i, err := range errs {
			if err != nil {
				res.Failed++
				if log != nil {
					fmt.Fprintf(log, "  transfer of range %d %s -> %s: %v\n", moves[i].RangeID, moves[i].From, moves[i].To, err)
				}
				continue
			}
			moved = append(moved, moves[i])
		}
		res.Moves += len(moved)
		if log != nil {
			fmt.Fprintf(log, "  leader balance round %d: %d of %d transfers done, from %s\n", res.Rounds, len(moved), len(moves), l)
		}
		// Wait until the nodes report the moves before planning again, so
		// the next plan does not move a leadership a second time.
		rctx, cancel := context.WithTimeout(ctx, roundSettle)
		_, err = Wait(rctx, cli, func(l *Layout) bool { return l.LeadersBalanced() || showsMoves(l, moved) })
		cancel()
		if err != nil && ctx.Err() != nil {
			return res, fmt.Errorf("layout: balancing round %d: %w", res.Rounds, ctx.Err())
		}
	}
}

// showsMoves reports whether every move's range is led by its target.
func showsMoves(l *Layout, moves []Move) bool {
	for _, m := range moves {
		i := slices.IndexFunc(l.Ranges, func(r Range) bool { return r.ID == m.RangeID })
		if i < 0 || l.Ranges[i].Leader != m.To || l.Ranges[i].Hinted {
			return false
		}
	}
	return true
}

func conn(conns map[string]*grpc.ClientConn, addr string) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("layout: no gRPC address for the leader")
	}
	if cc, ok := conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("layout: connect %s: %w", addr, err)
	}
	conns[addr] = cc
	return cc, nil
}

func transfer(ctx context.Context, cc *grpc.ClientConn, m Move) error {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	_, err := kvpb.NewClusterClient(cc).TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: m.RangeID, ToNode: m.To})
	return err
}

// Wait reads the layout every PollInterval until cond holds for it, and
// returns that layout. It gives up when ctx ends (after defaultWait under
// a context without a deadline), returning the last layout read, if any,
// and why cond did not hold.
func Wait(ctx context.Context, cli *client.Client, cond func(*Layout) bool) (*Layout, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWait)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	polls := int(time.Until(dl)/PollInterval) + 1
	var last *Layout
	var lastErr error
	for range polls {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		l, err := Read(rctx, cli)
		cancel()
		if err == nil {
			if cond(l) {
				return l, nil
			}
			last, lastErr = l, nil
		} else {
			lastErr = err
		}
		if sleep(ctx, PollInterval) != nil {
			break
		}
	}
	why := context.Cause(ctx)
	if why == nil {
		why = context.DeadlineExceeded // the polls ran out a moment early
	}
	switch {
	case lastErr != nil:
		return last, fmt.Errorf("layout: %w (last read: %v)", why, lastErr)
	case last != nil:
		return last, fmt.Errorf("layout: %w; last layout: %s", why, last)
	}
	return nil, fmt.Errorf("layout: %w before the first read", why)
}
