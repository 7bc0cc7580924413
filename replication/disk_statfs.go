//go:build linux || darwin

package replication

import "golang.org/x/sys/unix"

// availableBytes is the space in dir's filesystem that an unprivileged
// process may still write.
func availableBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
