// Package tlsconf turns certificate, key and CA files into *tls.Config
// values that re-read those files when they change, so certificates and CA
// bundles rotate without a restart; and it makes a local CA and the node
// and client certificates dialkv expects.
//
// A node certificate names its node with the URI SAN dialkv://node/<id>
// (NodeIDFromCert) and serves as both server and client certificate; a
// client certificate names its user with CN and dialkv://user/<name>.
// Peer connections are verified against the current CA bundle and the node
// id, not a host name, because a node is known by its id and its Raft
// address may be any address a proxy or NAT hands out.
package tlsconf
