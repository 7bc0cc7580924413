//go:build !linux && !darwin

package main

import "errors"

// dataDiskSpace is not known on this platform: the disk metrics are left
// out.
func dataDiskSpace(string) (size, available uint64, err error) {
	return 0, 0, errors.New("free space is not known on this platform")
}
