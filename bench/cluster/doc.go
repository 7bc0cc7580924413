// Package cluster starts and stops the local server clusters the
// benchmarks run against: dialkv as real `kvd serve` processes and etcd as
// etcdnode processes (bench/cmd/etcdnode), all on loopback below the
// kernel's ephemeral range. Every process is started in a process group of
// its own and stopped by its PID (SIGTERM, then SIGKILL after a grace
// period); if the benchmark itself is killed, the kernel kills its servers
// too (Pdeathsig). Ports and processes come from package
// github.com/dialkv/dialkv/harness, shared with the Jepsen-style tests and
// `kvd cluster`. Nothing here ever signals a process it did not start.
// The benchmarks' shared set-up is here too: where their server binaries
// are (Binary) and a start retried when an automatic port was lost
// (StartRetrying).
package cluster
