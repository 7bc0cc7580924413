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
}

func c(n int) string { return strconv.Itoa(n) }

func putArgs(n int) []string { return []string{"-workload", "put", "-clients", c(n)} }

func getLinearizableArgs(n int) []string {
	return []string{"-workload", "get", "-consistency", "linearizable", "-clients", c(n)}
}

// workloads are the comparison's rows, named as the RATIO lines name them,
// in the order they run. The -c64 ones use -clients clients (64 by
// default). The -r16 ones come last: splitting dialkv's key space cannot
// be undone, so every single-range workload runs before it.
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
	{name: "put-c64-r16", args: putArgs, ranges: 16, base: "put-c64"},
	{name: "get-linearizable-c64-r16", args: getLinearizableArgs, ranges: 16, base: "get-linearizable-c64"},
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
