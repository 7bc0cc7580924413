package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// Linux fixes it at 100 on every architecture Go supports.
const clockTicks = 100

// readCPUSeconds returns the user plus system CPU time pid has used, from
// /proc/PID/stat (Linux).
func readCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field k is f[k-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicks, nil
}

// procStatus holds the fields of /proc/PID/status this benchmark reports.
type procStatus struct {
	RSS, HWM int64 // bytes (VmRSS, VmHWM)
	Threads  int
}

func readStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	return parseStatus(b)
}

func parseStatus(b []byte) (procStatus, error) {
	var st procStatus
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		switch name {
		case "VmRSS", "VmHWM":
			if err != nil || len(f) != 2 || f[1] != "kB" {
				return st, fmt.Errorf("status: unexpected line %q", sc.Text())
			}
			if name == "VmRSS" {
				st.RSS = v << 10
			} else {
				st.HWM = v << 10
			}
			seen++
		case "Threads":
			if err != nil {
				return st, fmt.Errorf("status: unexpected line %q", sc.Text())
			}
			st.Threads = int(v)
			seen++
		}
	}
	if seen != 3 {
		return st, fmt.Errorf("status: VmRSS, VmHWM or Threads missing")
	}
	return st, sc.Err()
}

// countFDs returns the number of open file descriptors of pid.
func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// machineCPU is the first line of /proc/stat: jiffies of all CPUs.
type machineCPU struct {
	busy, total int64
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, err
	}
	return parseProcStat(b)
}

// parseProcStat reads the "cpu" line: user nice system idle iowait irq
// softirq steal (guest time is already in user). Busy is everything but
// idle and iowait.
func parseProcStat(b []byte) (machineCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var m machineCPU
	for i, s := range f[1:9] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		m.total += v
		if i != 3 && i != 4 { // idle, iowait
			m.busy += v
		}
	}
	return m, nil
}

// busyCores is how many cores' worth of CPU the machine used between a and
// b, given ncpu cores.
func busyCores(a, b machineCPU, ncpu int) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total) * float64(ncpu)
}

// loadAvg returns the first three fields of /proc/loadavg, as uptime shows
// them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
