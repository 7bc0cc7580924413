package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes f's data durable. fdatasync skips the inode's
// timestamps; with the segment's blocks preallocated, an append changes
// no metadata that has to be journaled.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// preallocate reserves size bytes for f. Failure is harmless (appends
// then grow the file).
func preallocate(f *os.File, size int64) { _ = unix.Fallocate(int(f.Fd()), 0, 0, size) }
