package main

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
)

// rangedCluster starts fakes n1 and n2 sharing a store with three ranges,
// one of them bounded by a key that is not UTF-8.
func rangedCluster(t *testing.T) (st *clienttest.Store, n1, n2 *clienttest.Server) {
	t.Helper()
	st = clienttest.NewStore()
	n1 = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n1"))
	n2 = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n2"))
	st.SetNodes(n1.Node(), n2.Node())
	st.SetRanges(
		&kvpb.RangeDescriptor{Id: 1, End: []byte("m"), Generation: 3, Replicas: []string{"n1", "n2"}, Leader: "n1"},
		&kvpb.RangeDescriptor{Id: 2, Start: []byte("m"), End: []byte("\xff\x00"), Generation: 1, Replicas: []string{"n2"}, Leader: "n2"},
		&kvpb.RangeDescriptor{Id: 5, Start: []byte("\xff\x00"), Generation: 2, Replicas: []string{"n1", "n2"}},
	)
	return st, n1, n2
}

func tableRows(t *testing.T, out string) [][]string {
	t.Helper()
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestKvctl_RangeList(t *testing.T) {
	_, n1, _ := rangedCluster(t)
	want := [][]string{
		{"ID", "START", "END", "LEADER", "REPLICAS", "GENERATION"},
		{"1", `""`, "m", "n1", "n1,n2", "3"},
		{"2", "m", `"\xff\x00"`, "n2", "n2", "1"},
		{"5", `"\xff\x00"`, "∞", "-", "n1,n2", "2"},
	}
	for _, format := range []string{"simple", "table"} {
		t.Run(format, func(t *testing.T) {
			rows := tableRows(t, mustRun(t, invocation{}, at(n1.Addr, "-w", format, "range", "list")...))
			if !slices.EqualFunc(rows, want, slices.Equal) {
				t.Fatalf("range list printed %q, want %q", rows, want)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		out := mustRun(t, invocation{}, at(n1.Addr, "-w", "json", "range", "list")...)
		if strings.Count(out, "\n") != 1 {
			t.Fatalf("json output %q is not exactly one line", out)
		}
		var got struct {
			Ranges []map[string]any `json:"ranges"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("json output %q: %v", out, err)
		}
		if len(got.Ranges) != 3 {
			t.Fatalf("%d ranges, want 3: %s", len(got.Ranges), out)
		}
		first, _ := json.Marshal(got.Ranges[0])
		if want := `{"end":"m","generation":3,"id":1,"leader":"n1","replicas":["n1","n2"],"start":""}`; string(first) != want {
			t.Fatalf("first range %s, want %s", first, want)
		}
		b64 := map[string]any{"base64": base64.StdEncoding.EncodeToString([]byte("\xff\x00"))}
		if end, _ := got.Ranges[1]["end"].(map[string]any); end["base64"] != b64["base64"] {
			t.Fatalf("binary end rendered as %v, want %v", got.Ranges[1]["end"], b64)
		}
		if got.Ranges[2]["leader"] != "" || got.Ranges[2]["end"] != "" {
			t.Fatalf("last range %v, want an empty leader and end", got.Ranges[2])
		}
	})

	t.Run("no ranges", func(t *testing.T) {
		srv := clienttest.Start(t)
		if out := mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "range", "list")...); out != "{\"ranges\":[]}\n" {
			t.Fatalf("json output %q, want an empty list", out)
		}
	})
}

func TestKvctl_RangeSplit(t *testing.T) {
	tests := []struct {
		format, key string
		check       func(t *testing.T, out string)
	}{
		{"simple", "g", func(t *testing.T, out string) {
			if want := "1 [\"\", g)\n6 [g, m)\n"; out != want {
				t.Fatalf("split printed %q, want %q", out, want)
			}
		}},
		{"simple", "x", func(t *testing.T, out string) {
			if want := "2 [m, x)\n6 [x, \"\\xff\\x00\")\n"; out != want {
				t.Fatalf("split printed %q, want %q", out, want)
			}
		}},
		{"table", "g", func(t *testing.T, out string) {
			want := [][]string{
				{"ID", "START", "END", "LEADER", "REPLICAS", "GENERATION"},
				{"1", `""`, "g", "n1", "n1,n2", "4"},
				{"6", "g", "m", "n1", "n1,n2", "4"},
			}
			if rows := tableRows(t, out); !slices.EqualFunc(rows, want, slices.Equal) {
				t.Fatalf("split printed %q, want %q", rows, want)
			}
		}},
		{"json", "\xff\x01", func(t *testing.T, out string) {
			var got struct {
				Left, Right struct {
					ID         uint64 `json:"id"`
					Start, End any
					Leader     string
					Replicas   []string
					Generation uint64
				}
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || strings.Count(out, "\n") != 1 {
				t.Fatalf("json output %q: %v", out, err)
			}
			if got.Left.ID != 5 || got.Right.ID != 6 || got.Right.End != "" || got.Left.Generation != 3 ||
				!slices.Equal(got.Right.Replicas, []string{"n1", "n2"}) {
				t.Fatalf("json split %+v", got)
			}
			if start, _ := got.Right.Start.(map[string]any); start["base64"] != base64.StdEncoding.EncodeToString([]byte("\xff\x01")) {
				t.Fatalf("binary split key rendered as %v", got.Right.Start)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format+" "+tt.key, func(t *testing.T) {
			st, n1, _ := rangedCluster(t)
			tt.check(t, mustRun(t, invocation{}, at(n1.Addr, "-w", tt.format, "range", "split", tt.key)...))
			if got := len(st.Ranges()); got != 4 {
				t.Fatalf("%d ranges after the split, want 4", got)
			}
		})
	}

	t.Run("the split shows in range list", func(t *testing.T) {
		_, n1, _ := rangedCluster(t)
		mustRun(t, invocation{}, at(n1.Addr, "range", "split", "g")...)
		rows := tableRows(t, mustRun(t, invocation{}, at(n1.Addr, "range", "list")...))
		var ids []string
		for _, r := range rows[1:] {
			ids = append(ids, r[0])
		}
		if !slices.Equal(ids, []string{"1", "6", "2", "5"}) {
			t.Fatalf("range ids in key order %v, want [1 6 2 5]", ids)
		}
	})
}

func TestKvctl_NodeList(t *testing.T) {
	st, n1, n2 := rangedCluster(t)
	st.SetNodes(n1.Node(), n2.Node(),
		&kvpb.NodeInfo{Id: "n3", RaftAddr: "127.0.0.1:7032", State: clienttest.StateDecommissioning},
		&kvpb.NodeInfo{Id: "n4", RaftAddr: "127.0.0.1:7042", State: clienttest.StateRemoved},
	)
	st.SetReachable("n2", false)

	want := [][]string{
		{"ID", "RAFT", "GRPC", "HTTP", "STATE", "REACHABLE", "LEADER", "RANGES"},
		{"n1", "raft-n1", n1.Addr, "-", "active", "yes", "yes", "2"},
		{"n2", "raft-n2", n2.Addr, "-", "active", "no", "yes", "3"},
		{"n3", "127.0.0.1:7032", "-", "-", "decommissioning", "yes", "no", "0"},
		{"n4", "127.0.0.1:7042", "-", "-", "removed", "yes", "no", "0"},
	}
	for _, format := range []string{"simple", "table"} {
		t.Run(format, func(t *testing.T) {
			rows := tableRows(t, mustRun(t, invocation{}, at(n1.Addr, "-w", format, "node", "list")...))
			if !slices.EqualFunc(rows, want, slices.Equal) {
				t.Fatalf("node list printed %q, want %q", rows, want)
			}
		})
	}
	objs := decodeLines(t, mustRun(t, invocation{}, at(n1.Addr, "-w", "json", "node", "list")...))
	if len(objs) != 4 {
		t.Fatalf("json node list %v, want 4 objects", objs)
	}
	for field, want := range map[string]any{"id": "n2", "grpc_addr": n2.Addr, "state": "active", "reachable": false,
		"leader": true, "ranges": 3.0, "leads": 1.0} {
		if got := objs[1][field]; got != want {
			t.Errorf("n2 %s = %v, want %v", field, got, want)
		}
	}
	if objs[3]["state"] != "removed" || objs[3]["ranges"] != 0.0 {
		t.Errorf("n4 = %v, want removed with no ranges", objs[3])
	}
}

func TestKvctl_NodeRemove(t *testing.T) {
	st, n1, n2 := rangedCluster(t)
	n3 := clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID("n3"))
	st.SetNodes(n1.Node(), n2.Node(), n3.Node())

	rows := tableRows(t, mustRun(t, invocation{}, at(n1.Addr, "node", "remove", "n2")...))
	if len(rows) != 4 || rows[0][4] != "STATE" {
		t.Fatalf("node remove printed %q, want the node list", rows)
	}
	if got := rows[2]; got[0] != "n2" || got[4] != "removed" || got[7] != "0" {
		t.Fatalf("row %q, want n2 removed without ranges", got)
	}
	if got := n1.Calls(clienttest.MethodRemoveMember) + n2.Calls(clienttest.MethodRemoveMember); got != 1 {
		t.Fatalf("RemoveMember called %d times, want 1", got)
	}
	for _, d := range st.Ranges() {
		if slices.Contains(d.GetReplicas(), "n2") || d.GetLeader() == "n2" {
			t.Fatalf("range %v still uses n2", d)
		}
	}

	r := kvctl(t, invocation{}, at(n1.Addr, "node", "remove", "n9")...)
	if r.code != exitNotFound || r.stdout != "" {
		t.Fatalf("remove of an unknown node: exit %d, stdout %q; want exit %d and no output", r.code, r.stdout, exitNotFound)
	}

	t.Run("listing failure after the removal is a warning", func(t *testing.T) {
		n1.Fail(clienttest.MethodRanges, 100, clienttest.NotLeader(""))
		r := kvctl(t, invocation{}, at(n1.Addr, "--timeout", "1s", "node", "remove", "n3")...)
		if r.code != exitOK || !strings.Contains(r.stderr, "warning: node n3 is being removed") {
			t.Fatalf("exit %d, stderr %q; want success with a warning", r.code, r.stderr)
		}
		rows := tableRows(t, r.stdout)
		if got := rows[3]; got[0] != "n3" || got[4] != "-" || got[7] != "-" {
			t.Fatalf("row %q, want n3 with unknown state and ranges", got)
		}
	})
}

func TestKvctl_RequestsFollowTheRoutingTable(t *testing.T) {
	st, n1, n2 := rangedCluster(t)
	// Only n1 is given; "p" lives in range 2, which n2 leads.
	mustRun(t, invocation{}, at(n1.Addr, "put", "p", "v")...)
	if n1.Calls(clienttest.MethodPut) != 0 || n2.Calls(clienttest.MethodPut) != 1 {
		t.Fatalf("put went to n1 %d and n2 %d times, want the leader n2", n1.Calls(clienttest.MethodPut), n2.Calls(clienttest.MethodPut))
	}
	if v, _ := st.Value([]byte("p")); string(v) != "v" {
		t.Fatalf("p = %q", v)
	}
	if got := mustRun(t, invocation{}, at(n1.Addr, "get", "p")...); got != "v" {
		t.Fatalf("get printed %q", got)
	}
	if got := n2.Calls(clienttest.MethodGet); got != 1 {
		t.Fatalf("n2 served %d gets, want 1", got)
	}
}

func TestClusterSummary(t *testing.T) {
	resp := &kvpb.RangesResponse{
		Nodes: []*kvpb.NodeInfo{
			{Id: "n10", State: "active"}, {Id: "n2", State: "active"}, {Id: "n1", State: "decommissioning"},
			{Id: "n3", State: "removed"},
		},
		Ranges: []*kvpb.RangeDescriptor{{Leader: "n2"}, {Leader: "n10"}, {Leader: "n2"}, {}, {Leader: "n7"}},
	}
	if got, want := clusterSummary(resp), "3 nodes, 5 ranges, leaders per node: n1=0 n2=2 n7=1 n10=1"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
	if got, want := clusterSummary(&kvpb.RangesResponse{}), "0 nodes, 0 ranges, leaders per node: none"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
}

func TestNaturalCompare(t *testing.T) {
	ids := []string{"n10", "n2", "n1", "b", "a10b", "a9c", "n02", "n"}
	slices.SortFunc(ids, naturalCompare)
	if want := []string{"a9c", "a10b", "b", "n", "n1", "n2", "n02", "n10"}; !slices.Equal(ids, want) {
		// n2 and n02 compare equal; either order is fine.
		alt := []string{"a9c", "a10b", "b", "n", "n1", "n02", "n2", "n10"}
		if !slices.Equal(ids, alt) {
			t.Fatalf("sorted %v, want %v", ids, want)
		}
	}
}
