// Package layout reads and shapes how a dialkv cluster's key space lies on
// its nodes, for the benchmarks that need more than one range:
//
//   - Read takes a Layout: the user ranges of the routing table
//     (Cluster.Ranges), which nodes hold a replica of each, and which node
//     leads each, as the nodes themselves report it (Cluster.Status).
//   - SplitKeys and Split cut a workload's key space into equal ranges
//     (Cluster.SplitRange).
//   - BalanceLeaders spreads the ranges' leaderships evenly over the nodes
//     (Cluster.TransferLeader) and waits, bounded, until they are.
//
// It talks to the cluster only through its public gRPC API, as an operator
// would, and never starts or stops a process.
package layout
