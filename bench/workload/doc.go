// Package workload is kvbench's load engine: it drives any key-value store
// through a small Driver interface with a fixed number of closed-loop
// clients, picks keys uniformly or from a zipfian distribution over a key
// space, and records each operation's latency in an HDR histogram.
//
// A run is bounded twice: by Config.Duration always, and by Config.Ops (or
// by the key count, for the load workload) when that is set. Each operation
// is bounded by Config.OpTimeout. Nothing here knows which store it talks
// to; the drivers live in bench/driver/dialkv and bench/driver/etcd.
package workload
