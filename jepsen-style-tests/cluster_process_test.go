//go:build linux

package jepsen

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `kvd cluster` (what `make run` starts) must take its nodes with it when
// it dies without stopping them: three `kvd serve` processes used to keep
// running, orphaned, after the parent was killed.
func TestProcess_KvdClusterNodesDieWithIt(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	base, err := freePortBase(3)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kvdBin, "cluster", "--nodes", "3", "--data-dir", t.TempDir(), "--port-base", strconv.Itoa(base))
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
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

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	for _, pid := range pids {
		if err := waitGone(pid, 20*time.Second); err != nil {
			t.Errorf("node pid %d after kvd cluster was killed: %v", pid, err)
		}
	}
}

// freePortBase finds a port base P below the ephemeral range whose `kvd
// cluster` ports (P+10i .. P+10i+2 for i = 1..nodes) can all be bound now.
func freePortBase(nodes int) (int, error) {
	for base := 20000 + os.Getpid()%1000*10; base < 30000; base += 100 {
		ok := true
		var held []net.Listener
		for i := 1; i <= nodes && ok; i++ {
			for p := base + 10*i; p <= base+10*i+2; p++ {
				ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
				if err != nil {
					ok = false
					break
				}
				held = append(held, ln)
			}
		}
		for _, ln := range held {
			ln.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free port base between 20000 and 30000")
}

// waitGone waits until pid has exited (no such process, or a zombie
// waiting to be reaped by whoever adopted it).
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		// The state follows the command name in parentheses.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("still running %v later", timeout)
}
