// Package connlimit bounds the connections a node's client ports may hold,
// so that clients can never take the file descriptors that the Raft port
// and the disk need.
//
// Every client connection is a descriptor, and a process has RLIMIT_NOFILE
// of them for everything: client sockets, peer sockets, log segments, bbolt
// files. Without a bound, one client holding enough idle connections makes
// the node's own accept on the Raft port and its dials to peers fail with
// EMFILE, and the node drops out of its Raft groups. Plan splits the
// limit into a reserve that clients never touch and a cap per client port;
// Listener enforces the cap.
//
// Past the cap a connection is refused at once, not queued: Listener
// accepts it and hands it to a refusal function (which may write an error
// the client can read, such as an HTTP 503) or closes it. A queued client
// would wait with no answer until its own deadline, while a refused one
// learns immediately and can go to another node. A few refusals run at a
// time, so refusing costs at most RefusalSlots descriptors more per port.
//
// The cap bounds how many connections clients hold; how long each may be
// held (idle keep-alive, a slowly sent request) is bounded by the servers'
// own timeouts, set in cmd/kvd.
package connlimit
