//go:build unix

package connlimit

import (
	"fmt"
	"math"
	"syscall"
)

// DescriptorLimit returns the process's RLIMIT_NOFILE soft limit, which the
// Go runtime has already raised to the hard limit at start.
func DescriptorLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("connlimit: read RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur > math.MaxInt32 {
		return math.MaxInt32, nil
	}
	return int(rl.Cur), nil
}
