package shard

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestBootstrap_OnlyTheFirstVotersBootstrap: a replica that applied its
// parent's split while being added to the parent as a non-voter is not
// among the new range's first voters. Its bootstrap must be a no-op, at
// the split and again at every restart (Raft's ErrNotVoter stopped the
// node from starting: `make jepsen RANGES=32 RANGE_MAX_BYTES=32KiB`).
func TestBootstrap_OnlyTheFirstVotersBootstrap(t *testing.T) {
	voters := func(ids ...string) []raft.Server {
		var out []raft.Server
		for _, id := range ids {
			out = append(out, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
		}
		return out
	}
	tests := []struct {
		name    string
		node    string
		servers []raft.Server
		want    int // servers in the replica's configuration afterwards
	}{
		{name: "a first voter bootstraps", node: "n1", servers: voters("n1", "n2", "n3"), want: 3},
		{name: "a replica outside the first voters does not", node: "n4", servers: voters("n1", "n2", "n3"), want: 0},
		{name: "nor does one listed as a non-voter", node: "n4", servers: append(voters("n1", "n2", "n3"),
			raft.Server{Suffrage: raft.Nonvoter, ID: "n4", Address: "n4"}), want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, trans := raft.NewInmemTransport(raft.ServerAddress(tc.node))
			store, s := openReplica(t, t.TempDir(), Descriptor{ID: 7, Generation: 2}, tc.node, trans, false)
			defer store.Close()
			defer s.Shutdown()
			// Twice: a node that crashed before clearing the pending
			// bootstrap runs it again when it restarts.
			for range 2 {
				if err := s.Bootstrap(tc.servers); err != nil {
					t.Fatalf("bootstrap on %s: %v", tc.node, err)
				}
			}
			f := s.Raft().GetConfiguration()
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
			if got := len(f.Configuration().Servers); got != tc.want {
				t.Errorf("%s's configuration has %d servers, want %d: %+v", tc.node, got, tc.want, f.Configuration().Servers)
			}
		})
	}
}
