// Command watchbench measures what watchers and leases cost a dialkv
// cluster (issue 16), and with -systems the same for etcd beside it: the write throughput with 0, 1 and 100 watchers on
// the written prefix, the events those watchers receive per second and how
// long after a put's acknowledgement they receive it, and how many leases
// the cluster grants and keeps alive per second.
//
// It starts 3 `kvd serve` nodes (fsync on) on 127.0.0.1 in a temporary
// directory and, after a short warm-up of puts,
//
//  1. runs -clients writers putting -value-size-byte values on -keys keys
//     under b/ for -duration, with no watcher (the baseline; it runs again
//     after the watcher phases, and the two are merged);
//  2. for each count in -watchers: opens that many KV.Watch streams on the
//     prefix b/, spread over the 3 nodes, one connection each (a static
//     4 MiB flow-control window; messages read as bytes, rawwatch.go), waits until
//     every stream has sent its first message (from then on it watches),
//     and runs the same writers for -duration. Each value names its
//     writer and its sequence number, so each event is matched to its put:
//     every watcher must receive the event of every acknowledged put, once
//     per Raft index, in index order per range (else a FAIL line and exit
//     code 1); the lag is the event's arrival minus the put's
//     acknowledgement (0 when the event came first);
//  3. runs -clients goroutines granting leases (TTL -lease-ttl) for half of
//     -duration; then -clients goroutines, each with a lease of its own,
//     sending KeepAlive requests on a stream, each as soon as the previous
//     one is answered, for half of -duration. Goroutine i talks to node
//     i mod 3; followers forward to the meta range's leader.
//
// Each measurement is one line on stdout:
//
//	WORKLOAD put-c64-before ops/s <n> p50 <ms> p99 <ms> errors <n> cpu kvd <%> bench <%> load <1-min load average>
//	WORKLOAD watch-w100 events/s <n> per_watcher <n> lag p50 <ms> p99 <ms> max <ms> drain_ms <ms> events/msg <n> missed <n> earlier <n>
//	WORKLOAD lease-grant-c64 ops/s <n> p50 <ms> p99 <ms> errors <n> ...
//
// and each watcher count gives a line comparing its writes with the
// baseline's, as benchcompare's SCALE lines compare dialkv with itself:
//
//	SCALE put-c64-w100/put-c64 <ops/s ratio> p99 <ms> vs <ms>
//
// followed by a NOTE line when the ratio is below 0.9, issue 16's bound.
// earlier counts events of puts acknowledged before the watch opened,
// which a watch served by a trailing follower delivers (no fault).
//
// With -systems dialkv,etcd the same phases then run against a fresh
// 3-member etcd (etcdnode processes, fsync on; the dialkv nodes stopped
// first): writes through clientv3, watches and leases over etcd's own
// gRPC streams, member i mod 3. Its lines name their measurements with
// "etcd-" before them (WORKLOAD etcd-watch-w100, SCALE
// etcd-put-c64-w100/etcd-put-c64), and one line per measurement both
// systems made compares them, dialkv's figure over etcd's:
//
//	RATIO put-c64-w100 <ops/s ratio> p99 <dialkv ms> vs <etcd ms>
//	RATIO watch-w100 <events/s ratio> lag p99 <dialkv ms> vs <etcd ms> (events/s delivered)
//
// cpu is each phase's CPU time as % of one core: the 3 kvd processes
// together and this benchmark's own process (which decodes every event of
// every watcher on the same 2 cores). Exit code 0 when every check held,
// 1 on a FAIL or an error (data and logs kept), 2 for bad flags. Every
// process it starts is stopped by its PID. It builds nothing: kvd and
// etcdnode are looked up next to its own binary unless given (`make
// bench-watch` builds them all into bin/).
package main
