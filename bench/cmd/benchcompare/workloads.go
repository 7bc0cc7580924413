package main

import "strconv"

// workloadSpec is one row of the comparison: kvbench flags shared by both
// systems.
type workloadSpec struct {
	name string
	// args returns kvbench's workload flags for the -clients setting.
	args func(clients int) []string
	// ranges, when above 1, is the number of ranges dialkv's key space is
	// split into (leaders balanced over the nodes) before the workload
	// runs; etcd, which has no ranges, runs it unchanged. base names the
	// same workload on the single range, for the SCALE line.
	ranges int
	base   string
	// dialkvOnly workloads have no etcd counterpart (transactions across
	// ranges): no RATIO line, a WORKLOAD line instead.
	dialkvOnly bool
	// txnKeys is the keys per transaction of a txn workload (kvbench
	// -txn-keys); each client needs that many keys of its own.
	txnKeys int
}

func c(n int) string { return strconv.Itoa(n) }

func putArgs(n int) []string { return []string{"-workload", "put", "-clients", c(n)} }

// txnArgs returns the flags of a txn workload putting k keys per
// transaction: "if the first key holds what this client last wrote there,
// put a new value under all k", each client on keys of its own.
func txnArgs(k int) func(int) []string {
	return func(n int) []string {
		return []string{"-workload", "txn", "-txn-keys", c(k), "-clients", c(n)}
	}
}

func getLinearizableArgs(n int) []string {
	return []string{"-workload", "get", "-consistency", "linearizable", "-clients", c(n)}
}

// workloads are the comparison's rows, named as the RATIO lines name them,
// in the order they run. The -c64 ones use -clients clients (64 by
// default). The -r16 ones come last: splitting dialkv's key space cannot
// be undone, so every single-range workload runs before it. The -x2 and
// -x4 transactions run on the same 16 ranges, dialkv only: each writes
// keys 1/2 (1/4) of the key space apart, so in 2 (4) ranges.
var workloads = []workloadSpec{
	{name: "put-c1", args: func(int) []string { return []string{"-workload", "put", "-clients", "1"} }},
	{name: "put-c64", args: putArgs},
	{name: "get-linearizable-c64", args: getLinearizableArgs},
	{name: "get-stale-c64", args: func(n int) []string {
		return []string{"-workload", "get", "-consistency", "stale", "-clients", c(n)}
	}},
	{name: "mixed-c64", args: func(n int) []string {
		return []string{"-workload", "mixed", "-read-ratio", "0.5", "-consistency", "linearizable", "-clients", c(n)}
	}},
	{name: "txn-c64", args: txnArgs(2), txnKeys: 2},
	{name: "put-c64-r16", args: putArgs, ranges: 16, base: "put-c64"},
	{name: "get-linearizable-c64-r16", args: getLinearizableArgs, ranges: 16, base: "get-linearizable-c64"},
	{name: "txn-c64-x2", args: txnArgs(2), txnKeys: 2, ranges: 16, base: "txn-c64", dialkvOnly: true},
	{name: "txn-c64-x4", args: txnArgs(4), txnKeys: 4, ranges: 16, dialkvOnly: true},
}

// systemsOf returns the systems a workload runs against.
func (w workloadSpec) systemsOf() []string {
	if w.dialkvOnly {
		return systems[:1]
	}
	return systems
}

func workloadNames() []string {
	var out []string
	for _, w := range workloads {
		out = append(out, w.name)
	}
	return out
}

func findWorkload(name string) (workloadSpec, bool) {
	for _, w := range workloads {
		if w.name == name {
			return w, true
		}
	}
	return workloadSpec{}, false
}
