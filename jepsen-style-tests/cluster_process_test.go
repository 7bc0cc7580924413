//go:build linux

package jepsen

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// `kvd cluster` (what `make run` starts) must take its nodes with it when
// it dies without stopping them: three `kvd serve` processes used to keep
// running, orphaned, after the parent was killed.
func TestProcess_KvdClusterNodesDieWithIt(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	base, err := harness.FreePortBase(3, 3)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kvdBin, "cluster", "--nodes", "3", "--data-dir", t.TempDir(), "--port-base", strconv.Itoa(base))
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	p, err := harness.Start(cmd, harness.ProcOptions{})
	w.Close() // kvd cluster has its own copy
	if err != nil {
		out.Close()
		t.Fatal(err)
	}
	var pids []int
	t.Cleanup(func() {
		p.Kill()
		out.Close()
		// Only when the test failed: nodes that outlived kvd cluster.
		for _, pid := range pids {
			if !processGone(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	started := regexp.MustCompile(`^started n\d+ \(pid (\d+)\)`)
	deadline := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("kvd cluster exited before it was ready (nodes %v)", pids)
			}
			if m := started.FindStringSubmatch(line); m != nil {
				pid, _ := strconv.Atoi(m[1])
				pids = append(pids, pid)
			}
			ready = strings.Contains(line, "is ready")
		case <-deadline:
			t.Fatalf("kvd cluster not ready within 60s (nodes %v)", pids)
		}
	}
	if len(pids) != 3 {
		t.Fatalf("kvd cluster started %d nodes (%v), want 3", len(pids), pids)
	}
	go func() {
		for range lines { // keep the pipe drained until it closes
		}
	}()

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		harness.Eventually(t, fmt.Sprintf("node pid %d to exit after kvd cluster was killed", pid), 20*time.Second,
			func() bool { return processGone(pid) })
	}
}

// processGone reports whether pid has exited: no such process, or a zombie
// waiting to be reaped by whoever adopted it.
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
