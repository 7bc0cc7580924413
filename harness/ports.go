package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Host is the only address anything here binds or dials.
const Host = "127.0.0.1"

const (
	// LowestPort is the bottom of the range ports are picked from: above
	// the well-known ports and those local services take by habit.
	LowestPort = 10000
	// ephemeralDefault is Linux's default first ephemeral port, and the
	// highest port picked on any kernel.
	ephemeralDefault = 32768
	// minPortRoom is the least room below the ephemeral range that picking
	// at random needs to find a free port quickly.
	minPortRoom = 1000
	// listenTries bounds the random picks of one ListenLocal.
	listenTries = 200
	// PortStride is the distance between consecutive members' ports in a
	// port plan.
	PortStride = 10
	// baseStep is the distance between the bases FreePortBase tries.
	baseStep = 100
)

// EphemeralPortLow is the first port of the kernel's ephemeral range,
// capped at 32768 (Linux's default, also used when the range cannot be
// read), so that ports picked below it are below it on any kernel.
func EphemeralPortLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return ephemeralDefault
	}
	return parseEphemeralLow(string(b))
}

// parseEphemeralLow reads the first port of ip_local_port_range ("32768
// 60999"), capped at 32768; 32768 when it cannot be parsed.
func parseEphemeralLow(s string) int {
	f := strings.Fields(s)
	if len(f) != 2 {
		return ephemeralDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 0 {
		return ephemeralDefault
	}
	return min(low, ephemeralDefault)
}

// portRange is [LowestPort, high) for high the first ephemeral port, or an
// error when the kernel's range leaves too little room below it.
func portRange() (high int, err error) {
	high = EphemeralPortLow()
	if high-LowestPort < minPortRoom {
		return 0, fmt.Errorf("harness: the kernel's ephemeral port range starts at %d, leaving no room above %d (see /proc/sys/net/ipv4/ip_local_port_range)", high, LowestPort)
	}
	return high, nil
}

// ListenLocal listens on a random free TCP port of 127.0.0.1 below the
// kernel's ephemeral range. Never :0 (see the package comment).
func ListenLocal() (net.Listener, error) {
	high, err := portRange()
	if err != nil {
		return nil, err
	}
	var last error
	for range listenTries {
		ln, err := listen(LowestPort + rand.IntN(high-LowestPort))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("harness: no free port in [%d, %d) after %d tries: %w", LowestPort, high, listenTries, last)
}

func listen(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort(Host, strconv.Itoa(port)))
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort(Host, strconv.Itoa(port)) }

// FreePorts returns n distinct TCP ports of 127.0.0.1, below the
// ephemeral range, that were free a moment ago: it listens n times, notes
// the ports and closes the listeners. Holding every listener until all n
// are chosen keeps them distinct; a server may still find one taken by
// the time it binds (see the package comment).
func FreePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() { closeAll(lns) }()
	ports := make([]int, 0, n)
	for range n {
		ln, err := ListenLocal()
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// MemberPorts are the count ports of member (1-based) in the port plan
// with base: base+10*member, base+10*member+1, ...
func MemberPorts(base, member, count int) []int {
	out := make([]int, count)
	for j := range out {
		out[j] = base + PortStride*member + j
	}
	return out
}

// PlanPorts returns the count ports of each of members first..last
// (1-based, inclusive) of base's port plan, out[k] for member first+k,
// after checking that all of them can be bound now (held at once, then
// released). A port at or above the ephemeral range, or one that is
// taken, is an error.
func PlanPorts(base, first, last, count int) ([][]int, error) {
	if first < 1 || last < first || count < 1 {
		return nil, fmt.Errorf("harness: bad port plan request: members %d..%d, %d ports each", first, last, count)
	}
	high := EphemeralPortLow()
	var lns []net.Listener
	defer func() { closeAll(lns) }()
	out := make([][]int, 0, last-first+1)
	for m := first; m <= last; m++ {
		pp := MemberPorts(base, m, count)
		for _, port := range pp {
			if port < 1024 || port >= high {
				return nil, fmt.Errorf("harness: port %d of base %d is outside [1024, %d), below the ephemeral range", port, base, high)
			}
			ln, err := listen(port)
			if err != nil {
				return nil, fmt.Errorf("harness: port %d of base %d is not free: %w", port, base, err)
			}
			lns = append(lns, ln)
		}
		out = append(out, pp)
	}
	return out, nil
}

// FreePortBase returns a port plan base whose members 1..members have
// count free ports each (see PlanPorts), every one of them in
// [LowestPort, ephemeral range). The search starts at a random base, so
// that concurrent tests and benchmarks tend to pick different ones.
func FreePortBase(members, count int) (int, error) {
	if members < 1 || count < 1 || count > PortStride {
		return 0, fmt.Errorf("harness: bad port plan: %d members of %d ports (at most %d)", members, count, PortStride)
	}
	high, err := portRange()
	if err != nil {
		return 0, err
	}
	span := PortStride*(members+1) + baseStep - 1
	span -= span % baseStep // a multiple of baseStep that holds the plan
	bases := (high - LowestPort - span) / baseStep
	if bases < 1 {
		return 0, fmt.Errorf("harness: %d members of %d ports do not fit in [%d, %d)", members, count, LowestPort, high)
	}
	first := rand.IntN(bases)
	var last error
	for k := range bases {
		base := LowestPort + (first+k)%bases*baseStep
		_, err := PlanPorts(base, 1, members, count)
		if err == nil {
			return base, nil
		}
		last = err
	}
	return 0, errors.Join(fmt.Errorf("harness: no port base in [%d, %d) with %d free ports for each of %d members", LowestPort, high, count, members), last)
}
