// Package jepsen holds dialkv's Jepsen-style tests: real kvd processes,
// injected faults, recorded histories and checkers.
//
// Today it holds the cluster-control harness (cluster.go): it builds bin/kvd
// and bin/kvctl, starts N real `kvd serve` processes on 127.0.0.1 with free
// ports, waits for them to be ready, finds the leader, and kills, stops,
// pauses, resumes and restarts nodes by PID. process_test.go drives it
// through kvctl and the HTTP API.
//
// Fault proxies (partitions and delays between peers, via kvd's
// --peer-proxy), nemeses that schedule faults, history recording and the
// per-level consistency checkers (porcupine for linearizable reads; bounded,
// session and stale checkers) come later and build on Cluster.
//
// Node indices are 0-based everywhere in this package: index i is node id
// "n<i+1>", GRPCAddrs()[i], HTTPAddrs()[i] and LogPath(i).
package jepsen
