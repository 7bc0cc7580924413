package cluster

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/procfs"
)

// The benchmarks read processes and the machine from /proc through
// prometheus/procfs, here and nowhere else.

// ProcInfo is what the benchmarks report of one process.
type ProcInfo struct {
	// CPU is the user plus system time the process has used.
	CPU time.Duration
	// RSS and PeakRSS are VmRSS and VmHWM, in bytes.
	RSS, PeakRSS int64
	Threads      int
	// FDs counts the open file descriptors.
	FDs int
}

// ReadProc reads pid's CPU time, memory, threads and descriptors.
func ReadProc(pid int) (ProcInfo, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return ProcInfo{}, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return ProcInfo{}, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	status, err := p.NewStatus()
	if err != nil {
		return ProcInfo{}, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	fds, err := p.FileDescriptorsLen()
	if err != nil {
		return ProcInfo{}, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	return ProcInfo{CPU: seconds(st.CPUTime()), RSS: int64(status.VmRSS), PeakRSS: int64(status.VmHWM),
		Threads: st.NumThreads, FDs: fds}, nil
}

// ReadProcCPU reads only pid's CPU time: the cheap part of ReadProc, for
// samples taken often.
func ReadProcCPU(pid int) (time.Duration, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("cluster: pid %d: %w", pid, err)
	}
	return seconds(st.CPUTime()), nil
}

// MachineCPU is the CPU time all of the machine's cores have spent so
// far: Busy is everything but idle and waiting for I/O (guest time is
// already in user time).
type MachineCPU struct {
	Busy, Total time.Duration
}

// ReadMachineCPU reads the machine's CPU time from /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	st, err := machineStat()
	if err != nil {
		return MachineCPU{}, err
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
	return MachineCPU{Busy: seconds(busy), Total: seconds(busy + c.Idle + c.Iowait)}, nil
}

// BusyCoresSince is how many of ncpu cores' worth of CPU the machine used
// between a and m.
func (m MachineCPU) BusyCoresSince(a MachineCPU, ncpu int) float64 {
	if m.Total <= a.Total {
		return 0
	}
	return float64(m.Busy-a.Busy) / float64(m.Total-a.Total) * float64(ncpu)
}

// LoadAvg returns the machine's 1, 5 and 15 minute load averages as
// uptime shows them, or "unknown".
func LoadAvg() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown"
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return "unknown"
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	return f(l.Load1) + " " + f(l.Load5) + " " + f(l.Load15)
}

// machineStat reads /proc/stat.
func machineStat() (procfs.Stat, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return procfs.Stat{}, fmt.Errorf("cluster: %w", err)
	}
	st, err := fs.Stat()
	if err != nil {
		return procfs.Stat{}, fmt.Errorf("cluster: %w", err)
	}
	return st, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
