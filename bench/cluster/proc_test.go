package cluster

import (
	"os"
	"testing"
)

func TestParseStatus_ReadsHWMAndRSS(t *testing.T) {
	m, err := parseStatus([]byte("Name:\tkvd\nVmPeak:\t 999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nThreads:\t9\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.PeakRSS != 2048<<10 || m.RSS != 1024<<10 {
		t.Fatalf("got %+v, want PeakRSS 2 MiB and RSS 1 MiB", m)
	}
	if _, err := parseStatus([]byte("Name:\tkvd\n")); err == nil {
		t.Fatal("a status without VmHWM parsed")
	}
}

func TestReadMemory_OfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system")
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.PeakRSS <= 0 || m.RSS <= 0 || m.RSS > m.PeakRSS {
		t.Fatalf("implausible %+v", m)
	}
}
