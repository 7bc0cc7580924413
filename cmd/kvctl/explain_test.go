package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
)

// zonedFakes starts n1 (the leader), n2 and n3, replicas of one range in
// zones a, b and c, holding k=v.
func zonedFakes(t *testing.T) map[string]*clienttest.Server {
	t.Helper()
	st := clienttest.NewStore()
	srv := map[string]*clienttest.Server{}
	var infos []*kvpb.NodeInfo
	for i, zone := range []string{"a", "b", "c"} {
		id := fmt.Sprintf("n%d", i+1)
		srv[id] = clienttest.Start(t, clienttest.WithStore(st), clienttest.WithID(id))
		info := srv[id].Node()
		info.Locality = "region=eu,zone=" + zone
		infos = append(infos, info)
	}
	st.SetNodes(infos...)
	st.SetRanges(&kvpb.RangeDescriptor{Id: 1, Replicas: []string{"n1", "n2", "n3"}, Leader: "n1"})
	st.Put([]byte("k"), []byte("v"))
	return srv
}

func TestKvctl_WeakReadsGoToTheNearestReplica(t *testing.T) {
	srv := zonedFakes(t)
	tests := []struct {
		name     string
		inv      invocation
		args     []string
		servedBy string
		chosen   string
	}{
		{name: "the endpoint given holds a replica", args: at(srv["n2"].Addr, "get", "k", "--consistency", "stale", "--explain", "-w", "json"),
			servedBy: "n2", chosen: "the first endpoint given (" + srv["n2"].Addr + ") holds a replica"},
		{name: "a linearizable read goes to the leader", args: at(srv["n2"].Addr, "get", "k", "--explain", "-w", "json"),
			servedBy: "n1", chosen: "routed to the range's leader"},
		{name: "--locality picks the replica in the zone",
			args:     at(srv["n1"].Addr, "--locality", "region=eu,zone=c", "get", "k", "--consistency", "bounded", "--max-staleness", "1s", "--explain", "-w", "json"),
			servedBy: "n3", chosen: "nearest replica by locality zone=c"},
		{name: "KVCTL_LOCALITY does too", inv: invocation{env: map[string]string{"KVCTL_LOCALITY": "region=eu,zone=b"}},
			args:     at(srv["n1"].Addr, "get", "k", "--consistency", "session", "--explain", "-w", "json"),
			servedBy: "n2", chosen: "nearest replica by locality zone=b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := decodeLines(t, mustRun(t, tt.inv, tt.args...))
			if len(objs) != 1 {
				t.Fatalf("%d objects, want 1", len(objs))
			}
			o := objs[0]
			e, _ := o["explain"].(map[string]any)
			if o["served_by"] != tt.servedBy || o["value"] != "v" || e == nil {
				t.Fatalf("got %v, want v served by %s with an explanation", o, tt.servedBy)
			}
			// The client's reason, then the server's.
			if why, _ := e["chosen_because"].(string); !strings.HasPrefix(why, tt.chosen) || !strings.HasSuffix(why, "; the node asked holds a replica") {
				t.Fatalf("chosen_because = %q, want it to start with %q and end with the server's reason", why, tt.chosen)
			}
		})
	}
}

func TestKvctl_GetExplainPrintsReadably(t *testing.T) {
	srv := zonedFakes(t)
	out := mustRun(t, invocation{}, at(srv["n3"].Addr, "get", "k", "--consistency", "stale", "--explain")...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		"v",
		"served by:      n3 (follower)",
		"range:          1, applied index 1",
		"consistency:    stale",
		"chosen because: the first endpoint given (" + srv["n3"].Addr + ") holds a replica; the node asked holds a replica",
	}
	if len(lines) != 6 || strings.Join(lines[:5], "\n") != strings.Join(want, "\n") || !strings.HasPrefix(lines[5], "staleness:") {
		t.Fatalf("output:\n%s\nwant:\n%s\nstaleness: ...", out, strings.Join(want, "\n"))
	}
	// Without --explain, the raw value alone.
	if out := mustRun(t, invocation{}, at(srv["n3"].Addr, "get", "k", "--consistency", "stale")...); out != "v" {
		t.Fatalf("get without --explain printed %q, want the raw value", out)
	}
	if r := kvctl(t, invocation{}, at(srv["n3"].Addr, "--locality", "region", "get", "k")...); r.code != 2 {
		t.Fatalf("a bad --locality exited %d, want 2 (usage)", r.code)
	}
}
