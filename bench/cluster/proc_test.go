package cluster

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReadMemory_OfThisProcess(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.PeakRSS <= 0 || m.RSS <= 0 || m.RSS > m.PeakRSS {
		t.Fatalf("implausible %+v", m)
	}
}

func TestReadProc_OfThisProcess(t *testing.T) {
	// Some CPU for the process to have used.
	deadline := time.Now().Add(50 * time.Millisecond)
	for n := 0; time.Now().Before(deadline); n++ {
		_ = strconv.Itoa(n)
	}
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.CPU <= 0 || p.RSS <= 0 || p.PeakRSS < p.RSS || p.Threads < 1 || p.FDs < 3 {
		t.Fatalf("implausible %+v", p)
	}
	if cpu, err := ReadProcCPU(os.Getpid()); err != nil || cpu < p.CPU {
		t.Fatalf("ReadProcCPU = %v, %v; want at least %v", cpu, err, p.CPU)
	}
}

func TestMachineCPU(t *testing.T) {
	a, err := ReadMachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a.Busy <= 0 || a.Total < a.Busy {
		t.Fatalf("implausible %+v", a)
	}
	tests := []struct {
		name string
		b    MachineCPU
		want float64
	}{
		{"half of two cores busy", MachineCPU{Busy: a.Busy + time.Second, Total: a.Total + 2*time.Second}, 1},
		{"all idle", MachineCPU{Busy: a.Busy, Total: a.Total + time.Second}, 0},
		{"no time passed", a, 0},
	}
	for _, tc := range tests {
		if got := tc.b.BusyCoresSince(a, 2); got != tc.want {
			t.Errorf("%s: %v cores, want %v", tc.name, got, tc.want)
		}
	}
	if l := LoadAvg(); l == "unknown" || len(strings.Fields(l)) != 3 {
		t.Errorf("LoadAvg = %q", l)
	}
}
