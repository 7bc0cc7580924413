// Package jepsen holds dialkv's Jepsen-style tests: real kvd processes,
// injected faults, recorded histories and checkers for every consistency
// promise (see docs/consistency.md and the README).
//
// # The pieces, by file
//
//   - cluster.go: N real `kvd serve` processes on 127.0.0.1 with free ports;
//     start, kill -9, SIGTERM, SIGSTOP/SIGCONT, restart, rejoin with an empty
//     data directory; leader lookup; crash detection (a process that exits
//     without being told to). Ports, processes and polling come from
//     package harness (ports below the kernel's ephemeral range, a process
//     group and Pdeathsig per node, stop by PID).
//   - proxy.go: a userspace TCP proxy on every directed node-to-node link
//     (kvd --peer-proxy), so links can be dropped, rejected or slowed, one
//     way or both: partitions of any shape without network namespaces.
//   - history.go: one JSON line per operation (history.jsonl): client, node,
//     API, op, key, value, level, max_staleness, start and end on the
//     harness's monotonic clock, ok / fail / info, error, served_by, range,
//     applied index, revision, session tokens; fault periods and restarts.
//   - workload.go: clients over gRPC and HTTP, one attempt per op to one
//     node: registers (put / get / compare-and-swap of unique values on keys
//     that rotate so each key's history stays short), reads at every level,
//     a list built by compare-and-swap appends and a set of unique keys
//     (lost acknowledged writes). Errors are classified with the server's
//     reasons: a write fails only when it provably was not applied.
//   - watch_workload.go, lease_workload.go: the watch and lease
//     workloads (Config.Workloads): writers and watchers under w/ that
//     resume from their cursor through any node, leases with keys under
//     lease/ kept alive, revoked or left to expire, and a watcher on
//     them; checker_watch.go and checker_lease.go hold them to the
//     watch's exactly-once, in-order, nothing-invented, nothing-lost
//     promise and the leases' never-early, never-late one.
//   - bank_workload.go, append_workload.go, txn_workload.go: the
//     transaction workloads (issue 17): transfers between accounts over
//     4 ranges and read-all transactions; transactions appending unique
//     elements to lists (one range each) and reading them; ids chosen by
//     the client, lost answers resolved with TxnStatus(abort_if_pending);
//     the kill-coordinator nemesis, which kill -9s the node coordinating
//     a cross-range transaction mid-commit. checker_bank.go holds the
//     bank to its total and to linearizability over the whole bank as
//     one state (porcupine); checker_append.go the lists to no lost,
//     duplicated, out-of-order or partially read append and no G1c or
//     G2 cycle between transactions.
//   - checker*.go: linearizability of writes and linearizable reads
//     (porcupine, per key, unknown writes possibly applied), bounded reads
//     against start - max_staleness, sessions (read-your-writes, monotonic),
//     stale reads (no invented values, per-replica monotonic), durability
//     after the heal, and error honesty (a failed write is never seen).
//   - nemesis.go: partitions (one node, the leader, halves, bridge, one-way,
//     reject), kill -9 + restart, pause, slow links, membership change
//     (remove, wait for the drain, wipe, rejoin), leader transfers (Cluster.TransferLeader),
//     range splits during traffic (Cluster.SplitRange), composed faults, on
//     a seeded schedule with healthy periods.
//   - runner.go, report.go: Run ties it together and writes the results
//     folder: summary.json, summary.txt, history.jsonl, harness.log, node
//     logs, and porcupine's HTML timeline (fault periods marked) for the
//     keys of any violation.
//   - tls.go, auth_nemesis.go, checker_auth.go: a run with TLS on every
//     link and auth on (Config.TLS): a CA and certificates, the clients
//     as user jepsen, the harness as root; the auth-revoke nemesis takes
//     the clients' role away and gives it back; the auth checker holds
//     the server to the revocation's bound.
//   - crashloop.go: CrashLoop, kill -9 and restart cycles on a cluster of
//     many ranges under writes, then the same checkers, the replicas
//     compared by digest and the loop's own verdict.
//
// cmd/jepsen is the CLI behind `make jepsen` and `make jepsen-canary`,
// cmd/crashloop the one behind `make crash-loop`.
//
// # Tests
//
// process_test.go drives the cluster through kvctl and HTTP;
// consistency_test.go proves each read level's promise on a follower cut
// off by SIGSTOP and measures read throughput per level; checker_test.go
// feeds the checkers hand-made bad histories (checker_txn_test.go the
// bank and append checkers); proxy_test.go checks the
// proxy; suite_test.go is the short suite run of `make test`
// (TestSuite_Txn its form with the transaction workloads and
// kill-coordinator, tls_process_test.go its form with TLS, auth and
// auth-revoke), and
// crashloop_process_test.go the short crash loop;
// repro_test.go reproduces server bugs the suite found (testdata/ keeps
// their histories and logs); limits_process_test.go floods a leader's
// client ports with idle and half-sent connections and checks that Raft
// and other clients never notice; upgrade_process_test.go builds
// previous releases from git (the one before the write-ahead log and the
// one before link version 3), upgrades a cluster of each node by node
// under writes (mixed links both ways), and rolls a node back to each.
// DIALKV_KVD_BIN and DIALKV_KVCTL_BIN test prebuilt binaries.
//
// Node indices are 0-based everywhere in this package: index i is node id
// "n<i+1>", GRPCAddrs()[i], HTTPAddrs()[i] and LogPath(i).
package jepsen
