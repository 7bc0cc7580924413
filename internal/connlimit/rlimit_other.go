//go:build !unix

package connlimit

import "errors"

// DescriptorLimit reports that this platform has no RLIMIT_NOFILE.
func DescriptorLimit() (int, error) {
	return 0, errors.New("connlimit: no RLIMIT_NOFILE on this platform")
}
