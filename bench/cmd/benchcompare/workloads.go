package main

import "strconv"

// workloadSpec is one row of the comparison: kvbench flags shared by both
// systems.
type workloadSpec struct {
	name string
	// args returns kvbench's workload flags for the -clients setting.
	args func(clients int) []string
}

func c(n int) string { return strconv.Itoa(n) }

// workloads are the comparison's rows, named as the RATIO lines name them.
// The -c64 ones use -clients clients (64 by default).
var workloads = []workloadSpec{
	{"put-c1", func(int) []string { return []string{"-workload", "put", "-clients", "1"} }},
	{"put-c64", func(n int) []string { return []string{"-workload", "put", "-clients", c(n)} }},
	{"get-linearizable-c64", func(n int) []string {
		return []string{"-workload", "get", "-consistency", "linearizable", "-clients", c(n)}
	}},
	{"get-stale-c64", func(n int) []string {
		return []string{"-workload", "get", "-consistency", "stale", "-clients", c(n)}
	}},
	{"mixed-c64", func(n int) []string {
		return []string{"-workload", "mixed", "-read-ratio", "0.5", "-consistency", "linearizable", "-clients", c(n)}
	}},
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
