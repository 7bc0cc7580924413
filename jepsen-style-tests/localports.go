package jepsen

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowestPort is the bottom of the range the harness picks ports from:
// above the well-known and registered-by-habit ports of local services.
const lowestPort = 10000

// listenTries bounds the random picks of one listenLocal.
const listenTries = 200

// listenLocal listens on a random free TCP port of 127.0.0.1 below the
// kernel's ephemeral range. Never :0: the kernel answers that from the
// ephemeral range, where any outgoing connection of any process may take
// the same number as its local port, so a node restarted on its fixed
// ports after a kill -9 could find one of them gone.
func listenLocal() (net.Listener, error) {
	high := ephemeralPortLow()
	if high-lowestPort < 1000 {
		return nil, errors.New("jepsen: the kernel's ephemeral port range leaves no room below it (see /proc/sys/net/ipv4/ip_local_port_range)")
	}
	var last error
	for range listenTries {
		port := lowestPort + rand.IntN(high-lowestPort)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, errors.Join(errors.New("jepsen: no free port below the ephemeral range"), last)
}

// ephemeralPortLow is the first port of the kernel's ephemeral range
// (Linux's default 32768 when it cannot be read), capped at 32768 so the
// harness stays below it on any kernel.
func ephemeralPortLow() int {
	const def = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return def
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return def
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return def
	}
	return min(low, def)
}
