//go:build linux || darwin

package main

import "golang.org/x/sys/unix"

// dataDiskSpace is the size of dir's filesystem and the space in it that
// an unprivileged process may still write (see diskSpace).
func dataDiskSpace(dir string) (size, available uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize)
	return uint64(st.Blocks) * bs, uint64(st.Bavail) * bs, nil
}
