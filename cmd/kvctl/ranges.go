package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func (a *app) rangeCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the ranges, their replicas and leaders",
		Long: `List the cluster's ranges in key order: ID, START, END, LEADER, REPLICAS
(comma-separated node ids), GENERATION. A range holds the keys in
[START, END); an empty START is shown as "", an empty END (the end of the
key space) as ∞, and keys that are not printable UTF-8 Go-quoted. LEADER
is the last known leader, "-" when unknown.

json prints one object: {"ranges": [{"id", "start", "end", "leader",
"replicas", "generation"}, ...]}, keys as strings when valid UTF-8, else
{"base64": ...}.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Ranges(ctx)
				if err != nil {
					return err
				}
				return a.printRanges(resp.GetRanges())
			})
		}),
	}
	split := &cobra.Command{
		Use:   "split KEY",
		Short: "Split the range holding KEY so that KEY starts a new range",
		Long: `Split the range holding KEY at KEY: the keys before KEY stay in the range,
KEY and the keys after it move to a new range with the same replicas.
Prints the two resulting ranges, one line each "ID [START, END)" (table: the
columns of range list; json: {"left": {...}, "right": {...}}). KEY must
lie strictly inside a range: splitting at a range's first key is a usage
error (exit code 2).`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			key := []byte(args[0])
			if len(key) == 0 {
				return usagef("range split: KEY must not be empty")
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.SplitRange(ctx, key)
				if err != nil {
					return err
				}
				return a.printSplit(resp)
			})
		}),
	}
	return a.groupCmd("range", "List and split ranges", list, split)
}

// rangeDescJSON is a range in range list and range split json output.
type rangeDescJSON struct {
	ID         uint64         `json:"id"`
	Start      rpctypes.Bytes `json:"start"`
	End        rpctypes.Bytes `json:"end"`
	Leader     string         `json:"leader"`
	Replicas   []string       `json:"replicas"`
	Generation uint64         `json:"generation"`
}

func newRangeDescJSON(d *kvpb.RangeDescriptor) rangeDescJSON {
	return rangeDescJSON{
		ID: d.GetId(), Start: d.GetStart(), End: d.GetEnd(), Leader: d.GetLeader(),
		Replicas: append([]string{}, d.GetReplicas()...), Generation: d.GetGeneration(),
	}
}

// startCell and endCell show range bounds in simple and table output.
func startCell(k []byte) string {
	if len(k) == 0 {
		return `""`
	}
	return printable(string(k))
}

func endCell(k []byte) string {
	if len(k) == 0 {
		return "∞"
	}
	return printable(string(k))
}

var rangeColumns = []string{"ID", "START", "END", "LEADER", "REPLICAS", "GENERATION"}

func rangeRow(d *kvpb.RangeDescriptor) []string {
	return []string{u64(d.GetId()), startCell(d.GetStart()), endCell(d.GetEnd()), dash(d.GetLeader()),
		dash(strings.Join(d.GetReplicas(), ",")), u64(d.GetGeneration())}
}

func (a *app) printRanges(ranges []*kvpb.RangeDescriptor) error {
	w := a.env.stdout
	if a.out() == formatJSON {
		out := struct {
			Ranges []rangeDescJSON `json:"ranges"`
		}{Ranges: []rangeDescJSON{}}
		for _, d := range ranges {
			out.Ranges = append(out.Ranges, newRangeDescJSON(d))
		}
		return writeJSONLine(w, out)
	}
	t := newTable(w, rangeColumns...)
	for _, d := range ranges {
		t.row(rangeRow(d)...)
	}
	return t.flush()
}

func (a *app) printSplit(resp *kvpb.SplitRangeResponse) error {
	w := a.env.stdout
	switch a.out() {
	case formatJSON:
		return writeJSONLine(w, struct {
			Left  rangeDescJSON `json:"left"`
			Right rangeDescJSON `json:"right"`
		}{newRangeDescJSON(resp.GetLeft()), newRangeDescJSON(resp.GetRight())})
	case formatTable:
		t := newTable(w, rangeColumns...)
		t.row(rangeRow(resp.GetLeft())...)
		t.row(rangeRow(resp.GetRight())...)
		return t.flush()
	}
	for _, d := range []*kvpb.RangeDescriptor{resp.GetLeft(), resp.GetRight()} {
		if _, err := fmt.Fprintf(w, "%d [%s, %s)\n", d.GetId(), startCell(d.GetStart()), endCell(d.GetEnd())); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

func (a *app) nodeCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the cluster's nodes with their state and ranges",
		Long: `List the nodes registered in the cluster: ID, RAFT, GRPC, HTTP, STATE
(active, decommissioning or removed), REACHABLE (from the answering node),
LEADER (leads at least one range), RANGES (number of ranges with a replica
on the node). json prints one object per node, with "leads", the number of
ranges it leads.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				members, err := c.Members(ctx)
				if err != nil {
					return err
				}
				ranges, err := c.Ranges(ctx)
				if err != nil {
					return err
				}
				return a.printNodes(members.GetMembers(), ranges)
			})
		}),
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Decommission a node, then list the nodes",
		Long: `Decommission node ID: the cluster moves its replicas to the other nodes,
then marks it removed. The command returns once the decommission has
started and lists the nodes (as node list); run node list to follow it.
An unknown node exits with code 4.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.RemoveMember(ctx, args[0])
				if err != nil {
					return err
				}
				ranges, err := c.Ranges(ctx)
				if err != nil {
					// The decommission started; only the listing is partial.
					fmt.Fprintf(a.env.stderr, "warning: node %s is being removed, but the ranges could not be listed: %v\n", args[0], err)
					ranges = nil
				}
				return a.printNodes(resp.GetMembers(), ranges)
			})
		}),
	}
	return a.groupCmd("node", "List and decommission nodes", list, remove)
}

type nodeJSON struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	GRPCAddr  string `json:"grpc_addr"`
	HTTPAddr  string `json:"http_addr"`
	State     string `json:"state"`
	Reachable bool   `json:"reachable"`
	Leader    bool   `json:"leader"`
	Ranges    *int   `json:"ranges,omitempty"`
	Leads     *int   `json:"leads,omitempty"`
}

// printNodes prints members joined with the routing table. ranges may be
// nil: the state then comes from the voter flag and the counts are unknown.
func (a *app) printNodes(members []*kvpb.Member, ranges *kvpb.RangesResponse) error {
	states := map[string]string{}
	hosted, leads := map[string]int{}, map[string]int{}
	for _, n := range ranges.GetNodes() {
		states[n.GetId()] = n.GetState()
	}
	for _, d := range ranges.GetRanges() {
		for _, r := range d.GetReplicas() {
			hosted[r]++
		}
		if d.GetLeader() != "" {
			leads[d.GetLeader()]++
		}
	}
	state := func(m *kvpb.Member) string {
		if s, ok := states[m.GetId()]; ok && s != "" {
			return s
		}
		if m.GetVoter() {
			return client.NodeActive
		}
		return "-"
	}
	w := a.env.stdout
	if a.out() == formatJSON {
		for _, m := range members {
			n := nodeJSON{
				ID: m.GetId(), RaftAddr: m.GetRaftAddr(), GRPCAddr: m.GetGrpcAddr(), HTTPAddr: m.GetHttpAddr(),
				State: state(m), Reachable: m.GetReachable(), Leader: m.GetLeader(),
			}
			if ranges != nil {
				h, l := hosted[m.GetId()], leads[m.GetId()]
				n.Ranges, n.Leads = &h, &l
			}
			if err := writeJSONLine(w, n); err != nil {
				return err
			}
		}
		return nil
	}
	t := newTable(w, "ID", "RAFT", "GRPC", "HTTP", "STATE", "REACHABLE", "LEADER", "RANGES")
	for _, m := range members {
		count := "-"
		if ranges != nil {
			count = strconv.Itoa(hosted[m.GetId()])
		}
		t.row(m.GetId(), dash(m.GetRaftAddr()), dash(m.GetGrpcAddr()), dash(m.GetHttpAddr()),
			state(m), yesNo(m.GetReachable()), yesNo(m.GetLeader()), count)
	}
	return t.flush()
}

// clusterSummary is the line cluster status prints after its rows:
// "N nodes, M ranges, leaders per node: n1=3 n2=2". Removed nodes are not
// counted; every other node is listed, with 0 when it leads nothing.
func clusterSummary(resp *kvpb.RangesResponse) string {
	leads := map[string]int{}
	var ids []string
	for _, n := range resp.GetNodes() {
		if n.GetState() == client.NodeRemoved {
			continue
		}
		if _, ok := leads[n.GetId()]; !ok {
			ids = append(ids, n.GetId())
		}
		leads[n.GetId()] += 0
	}
	nodes := len(ids)
	for _, d := range resp.GetRanges() {
		id := d.GetLeader()
		if id == "" {
			continue
		}
		if _, ok := leads[id]; !ok {
			ids = append(ids, id) // a leader the registry does not list
		}
		leads[id]++
	}
	slices.SortFunc(ids, naturalCompare)
	var b strings.Builder
	fmt.Fprintf(&b, "%d nodes, %d ranges, leaders per node:", nodes, len(resp.GetRanges()))
	if len(ids) == 0 {
		b.WriteString(" none")
	}
	for _, id := range ids {
		fmt.Fprintf(&b, " %s=%d", printable(id), leads[id])
	}
	return b.String()
}

// naturalCompare orders strings with their digit runs compared as numbers,
// so that n2 comes before n10.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitPrefix(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
