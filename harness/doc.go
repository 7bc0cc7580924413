// Package harness is how dialkv's tests, benchmarks and `kvd cluster` start
// servers on one machine and wait for them: the one place that picks
// loopback ports, starts and stops child processes, and polls for a
// condition. It is not internal: the benchmark module (bench/) imports it.
//
//   - Ports (ports.go). Every port is on 127.0.0.1 and below the kernel's
//     ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, never above
//     32768). A port from 127.0.0.1:0 is in that range, where any outgoing
//     connection of any process may be given the same number as its local
//     port: a node restarted on its fixed ports after a kill -9 could find
//     one of them taken. Picking a free port is racy by nature (another
//     process may bind it between the check and the server's own bind), so
//     callers that start servers on picked ports retry on "address already
//     in use". A port plan is `kvd cluster`'s layout: member i (1-based) of
//     the plan with base P uses P+10i, P+10i+1, ...
//   - Processes (proc.go). Start puts a child in a process group of its
//     own, so that a Ctrl-C on the terminal reaches only the parent, which
//     then stops each child by PID; on Linux the kernel also sends the
//     child a signal (Pdeathsig) when the parent dies without stopping it,
//     so no server outlives a killed test or benchmark. Stop sends SIGTERM,
//     escalates to SIGKILL after a grace period, and reaps the child.
//     Nothing here signals a process it did not start.
//   - Test servers (binaries.go). BuildBinaries builds dialkv's commands
//     for a test that runs them as real processes, and StartServer starts
//     one (such as `kvd cluster`), waits until its output says it is
//     ready and stops it when the test ends.
//   - Waiting (poll.go). Poll and Eventually ask a condition again and
//     again, backing off from 10 ms to a ceiling, and give up after a
//     timeout and a bounded number of polls. Use them only where there is
//     no event to await (placement and splits run on timers; another
//     process's readiness is only visible by asking it).
package harness
