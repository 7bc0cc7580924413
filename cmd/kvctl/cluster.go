package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func (a *app) clusterCmd() *cobra.Command {
	status := &cobra.Command{
		Use:   "status",
		Short: "Show every endpoint's node and ranges",
		Long: `Ask every endpoint for its status, one row per (node, range) for every range
the node hosts: NODE, GRPC, RANGE, STATE, TERM, COMMIT, APPLIED, LAG
(commit - applied), LEADER. Unreachable endpoints are listed with STATE
"unreachable" and the reason on stderr. Exits with code 3 when no endpoint
answers.

simple and table end with a summary line from the routing table:
"N nodes, M ranges, leaders per node: n1=3 n2=2 ..." (removed nodes are not
counted). json prints one object per endpoint, with its ranges, and no
summary.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, a.clusterStatus)
		}),
	}
	return a.groupCmd("cluster", "Inspect the cluster", status)
}

type endpointStatus struct {
	endpoint string
	resp     *kvpb.StatusResponse
	err      error
}

func (a *app) clusterStatus(ctx context.Context, c *client.Client) error {
	eps := c.Endpoints()
	results := make([]endpointStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			resp, err := c.Status(ctx, ep)
			results[i] = endpointStatus{endpoint: ep, resp: resp, err: err}
		})
	}
	wg.Wait()

	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if err := a.printStatus(results); err != nil {
		return err
	}
	if len(errs) == len(results) {
		// The error line names every failure; warnings would repeat it.
		return codedError{exitUnavailable, fmt.Errorf("no endpoint reachable: %w", errors.Join(errs...))}
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(a.env.stderr, "warning: %s unreachable: %v\n", r.endpoint, r.err)
		}
		for _, rg := range r.resp.GetNode().GetRanges() {
			if e := rg.GetAppendError(); e != "" && a.out() != formatJSON {
				// The row looks healthy: say that this replica is not
				// taking its leader's entries.
				fmt.Fprintf(a.env.stderr, "warning: range %d on %s is not taking its leader's entries: %s\n", rg.GetId(), r.resp.GetNode().GetId(), e)
			}
		}
	}
	if a.out() == formatJSON {
		return nil
	}
	ranges, err := c.Ranges(ctx)
	if err != nil {
		fmt.Fprintf(a.env.stderr, "warning: no summary, the ranges could not be listed: %v\n", err)
		return nil
	}
	if _, err := fmt.Fprintln(a.env.stdout, clusterSummary(ranges)); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

type rangeJSON struct {
	ID           uint64         `json:"id"`
	Start        rpctypes.Bytes `json:"start"`
	End          rpctypes.Bytes `json:"end"`
	State        string         `json:"state"`
	Term         uint64         `json:"term"`
	CommitIndex  uint64         `json:"commit_index"`
	AppliedIndex uint64         `json:"applied_index"`
	Lag          uint64         `json:"lag"`
	Leader       string         `json:"leader"`
	Replicas     []string       `json:"replicas"`
	Keys         uint64         `json:"keys"`
	SizeBytes    uint64         `json:"size_bytes"`
	// AppendFailures and AppendError: see kvpb.RangeStatus.
	AppendFailures uint64 `json:"append_failures"`
	AppendError    string `json:"append_error,omitempty"`
}

type statusJSON struct {
	Endpoint  string      `json:"endpoint"`
	Reachable bool        `json:"reachable"`
	Error     string      `json:"error,omitempty"`
	ID        string      `json:"id,omitempty"`
	GRPCAddr  string      `json:"grpc_addr,omitempty"`
	RaftAddr  string      `json:"raft_addr,omitempty"`
	HTTPAddr  string      `json:"http_addr,omitempty"`
	Version   string      `json:"version,omitempty"`
	UptimeMS  int64       `json:"uptime_ms,omitempty"`
	Ranges    []rangeJSON `json:"ranges,omitempty"`
}

func lag(r *kvpb.RangeStatus) uint64 {
	if r.GetCommitIndex() > r.GetAppliedIndex() {
		return r.GetCommitIndex() - r.GetAppliedIndex()
	}
	return 0
}

func (a *app) printStatus(results []endpointStatus) error {
	w := a.env.stdout
	if a.out() == formatJSON {
		for _, r := range results {
			s := statusJSON{Endpoint: r.endpoint, Reachable: r.err == nil}
			if r.err != nil {
				s.Error = r.err.Error()
			}
			n := r.resp.GetNode()
			s.ID, s.GRPCAddr, s.RaftAddr, s.HTTPAddr = n.GetId(), n.GetGrpcAddr(), n.GetRaftAddr(), n.GetHttpAddr()
			s.Version, s.UptimeMS = n.GetVersion(), n.GetUptimeMs()
			for _, rg := range n.GetRanges() {
				s.Ranges = append(s.Ranges, rangeJSON{
					ID: rg.GetId(), Start: rg.GetStart(), End: rg.GetEnd(), State: rg.GetState(),
					Term: rg.GetTerm(), CommitIndex: rg.GetCommitIndex(), AppliedIndex: rg.GetAppliedIndex(),
					Lag: lag(rg), Leader: rg.GetLeader(), Replicas: rg.GetReplicas(),
					Keys: rg.GetKeys(), SizeBytes: rg.GetSizeBytes(),
					AppendFailures: rg.GetAppendFailures(), AppendError: rg.GetAppendError(),
				})
			}
			if err := writeJSONLine(w, s); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(w, "NODE", "GRPC", "RANGE", "STATE", "TERM", "COMMIT", "APPLIED", "LAG", "LEADER")
	for _, r := range results {
		if r.err != nil {
			t.row("-", r.endpoint, "-", "unreachable", "-", "-", "-", "-", "-")
			continue
		}
		n := r.resp.GetNode()
		if len(n.GetRanges()) == 0 {
			t.row(n.GetId(), r.endpoint, "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		for _, rg := range n.GetRanges() {
			t.row(n.GetId(), r.endpoint, u64(rg.GetId()), rg.GetState(), u64(rg.GetTerm()),
				u64(rg.GetCommitIndex()), u64(rg.GetAppliedIndex()), u64(lag(rg)), dash(rg.GetLeader()))
		}
	}
	return t.flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) memberCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the cluster's members",
		Long: `List the nodes registered in the cluster: ID, RAFT, GRPC, HTTP, VOTER (the
node is active, not decommissioning or removed), LEADER (it leads at least
one range). json prints one object per member, with "reachable". node list
shows the same nodes with their state and ranges.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Members(ctx)
				if err != nil {
					return err
				}
				return a.printMembers(resp.GetMembers())
			})
		}),
	}
	var nonvoter bool
	add := &cobra.Command{
		Use:   "add ID RAFT_ADDR",
		Short: "Register a node with the cluster, then list the members",
		Long: `Register node ID, reachable for Raft at RAFT_ADDR, as an active node, then
list the members. Registering the same ID at the same address again is
harmless; another address is a conflict. Placement then gives the node
replicas. (kvd --join registers a node by itself.)`,
		Args: cobra.ExactArgs(2),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if nonvoter {
				fmt.Fprintln(a.env.stderr, "warning: --nonvoter is ignored: nodes join as ordinary members and placement decides their replicas")
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.AddMember(ctx, args[0], args[1], nonvoter)
				if err != nil {
					return err
				}
				return a.printMembers(resp.GetMembers())
			})
		}),
	}
	// Not cobra's MarkDeprecated: its notice would go to stdout.
	add.Flags().BoolVar(&nonvoter, "nonvoter", false, "deprecated and ignored: nodes join as ordinary members")
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Decommission a node, then list the members",
		Long: `Decommission node ID: the cluster moves its replicas to the other nodes,
then marks it removed (see node list for its state). An unknown node exits
with code 4. Same as node remove, which prints the node list instead.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.RemoveMember(ctx, args[0])
				if err != nil {
					return err
				}
				return a.printMembers(resp.GetMembers())
			})
		}),
	}
	return a.groupCmd("member", "List, register and decommission cluster members", list, add, remove)
}

type memberJSON struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	GRPCAddr  string `json:"grpc_addr"`
	HTTPAddr  string `json:"http_addr"`
	Voter     bool   `json:"voter"`
	Leader    bool   `json:"leader"`
	Reachable bool   `json:"reachable"`
}

func (a *app) printMembers(members []*kvpb.Member) error {
	w := a.env.stdout
	if a.out() == formatJSON {
		for _, m := range members {
			if err := writeJSONLine(w, memberJSON{
				ID: m.GetId(), RaftAddr: m.GetRaftAddr(), GRPCAddr: m.GetGrpcAddr(), HTTPAddr: m.GetHttpAddr(),
				Voter: m.GetVoter(), Leader: m.GetLeader(), Reachable: m.GetReachable(),
			}); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(w, "ID", "RAFT", "GRPC", "HTTP", "VOTER", "LEADER")
	for _, m := range members {
		t.row(m.GetId(), dash(m.GetRaftAddr()), dash(m.GetGrpcAddr()), dash(m.GetHttpAddr()),
			yesNo(m.GetVoter()), yesNo(m.GetLeader()))
	}
	return t.flush()
}
