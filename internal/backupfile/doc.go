// Package backupfile is the on-disk form of a dialkv backup, shared by
// the tool that writes one (kvctl backup save), the one that checks it
// (kvctl backup verify) and the one that restores from it (kvd restore).
//
// A backup is a directory, or one tar file holding the same entries:
//
//	manifest.json     the cluster it came from, when, and per range its
//	                  bounds, applied index, key count, SHA-256 digest, file
//	                  name and the file's own SHA-256
//	range-<id>.kvs    the range's keys, values and revisions, in key order
//
// The digest of a range is the one a replica computes (raftstore's
// RangeFSM.Digest) over the keys the file holds, so a backup can be
// checked against the cluster it came from and, re-hashed, against
// itself. Verify re-hashes every file and recomputes every digest; a
// backup that fails it is never restored.
package backupfile
