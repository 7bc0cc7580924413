package jepsen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// rangeList is `kvctl range list -w json`.
type rangeList struct {
	Ranges []struct {
		ID       uint64   `json:"id"`
		Start    any      `json:"start"`
		End      any      `json:"end"`
		Leader   string   `json:"leader"`
		Replicas []string `json:"replicas"`
	} `json:"ranges"`
}

func listRanges(t *testing.T, c *Cluster) rangeList {
	t.Helper()
	var rl rangeList
	out := mustKvctl(t, c, "range", "list", "-w", "json")
	if err := json.Unmarshal([]byte(out), &rl); err != nil {
		t.Fatalf("range list -w json: %v: %q", err, out)
	}
	return rl
}

// hostedRanges is how many range replicas node i reports, -1 if it cannot
// be asked.
func hostedRanges(c *Cluster, i int) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.Status(ctx, i)
	if err != nil {
		return -1
	}
	return len(st.GetNode().GetRanges())
}

// startJoiner starts one more kvd that joins through node via, and stops
// it by PID when the test ends.
func startJoiner(t *testing.T, c *Cluster, id string, via int) (grpcAddr string, pid int) {
	t.Helper()
	ports, err := harness.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), id)
	logf, err := os.Create(dir + ".log")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	cmd := exec.Command(kvdBin, "serve", "--id", id, "--data-dir", dir,
		"--grpc-addr", grpcAddr,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--join", c.GRPCAddrs()[via],
		"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms",
		"--snapshot-rate-adaptive") // as the cluster's nodes
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := harness.Start(cmd, harness.ProcOptions{})
	logf.Close() // the child has its own descriptor
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(DefaultStopTimeout); err != nil {
			t.Logf("stop %s (pid %d): %v", id, p.PID(), err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(dir + ".log")
			lines := strings.Split(string(b), "\n")
			t.Logf("--- %s log tail:\n%s", id, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return grpcAddr, p.PID()
}

// TestProcess_RangesSurviveSplitsJoinRemoveAndKill is the range-shard
// acceptance test: 5 nodes, 10,000 keys through kvctl import, at least 8
// ranges, a 6th node joins, one node is decommissioned, one is killed, and
// a full scan still finds every key exactly once, in order.
func TestProcess_RangesSurviveSplitsJoinRemoveAndKill(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{
		KvdPath: kvdBin, Dir: t.TempDir(), Nodes: 5,
		// Small ranges, so that 10,000 keys make many of them. Moves are
		// paced adaptively: the join and the decommission below must still
		// finish in time (other process tests move replicas unpaced).
		ExtraArgs: []string{"--range-max-bytes", "65536", "--snapshot-rate-adaptive"},
		Logf:      func(f string, a ...any) { t.Logf(f, a...) },
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 40)
		}
		c.Close()
	})

	const n = 10000
	var in strings.Builder
	want := make([]string, 0, n)
	for i := range n {
		k := fmt.Sprintf("user/%05d", i)
		fmt.Fprintf(&in, "%s\tvalue-%05d-%s\n", k, i, strings.Repeat("x", 64))
		want = append(want, k)
	}
	file := filepath.Join(t.TempDir(), "keys.tsv")
	if err := os.WriteFile(file, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustKvctl(t, c, "import", file)
	t.Logf("imported %d keys in %v", n, time.Since(start).Round(time.Millisecond))

	// Size-triggered splits, helped along by manual ones so the test does
	// not wait on many split rounds.
	for _, k := range []string{"user/02000", "user/04000", "user/06000", "user/08000"} {
		mustKvctl(t, c, "range", "split", k)
	}
	harness.Eventually(t, "at least 8 ranges", 90*time.Second, func() bool { return len(listRanges(t, c).Ranges) >= 8 })

	scanAll := func() {
		t.Helper()
		out := mustKvctl(t, c, "scan")
		var got []string
		for line := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n") {
			k, _, _ := strings.Cut(line, "\t")
			got = append(got, k)
		}
		if !slices.Equal(got, want) {
			missing := 0
			for _, k := range want {
				if _, ok := slices.BinarySearch(got, k); !ok {
					missing++
				}
			}
			t.Fatalf("full scan: %d keys (%d missing), want %d in order", len(got), missing, len(want))
		}
	}
	scanAll()

	// A 6th node joins and receives replicas.
	_, _ = startJoiner(t, c, "n6", 0)
	harness.Eventually(t, "n6 holds replicas", 90*time.Second, func() bool {
		for _, r := range listRanges(t, c).Ranges {
			if slices.Contains(r.Replicas, "n6") {
				return true
			}
		}
		return false
	})

	// n2 is decommissioned: its replicas move off; no range loses one.
	mustKvctl(t, c, "node", "remove", "n2")
	harness.Eventually(t, "n2 holds no replica and every range has 3", 120*time.Second, func() bool {
		for _, r := range listRanges(t, c).Ranges {
			if len(r.Replicas) != 3 || slices.Contains(r.Replicas, "n2") {
				return false
			}
		}
		return hostedRanges(c, 1) == 0
	})

	// One more node dies; every range still has a majority.
	if err := c.Kill(3); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed n4")
	scanAll()
}
