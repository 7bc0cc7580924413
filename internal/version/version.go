// Package version says which build of dialkv is running.
//
// `make build` stamps Version from `git describe` with
// -ldflags "-X github.com/dialkv/dialkv/internal/version.Version=...". A
// plain `go build` leaves it empty, and String falls back to the commit
// the Go toolchain records in the binary.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at link time; empty in an unstamped build.
var Version string

// String is the version line of `kvd --version` and `kvctl --version`:
// the stamped version, or the commit (with "-dirty" for uncommitted
// changes) a plain go build recorded, then the Go version.
func String() string {
	v := Version
	if v == "" {
		v = fromBuildInfo()
	}
	return fmt.Sprintf("%s (%s)", v, runtime.Version())
}

func fromBuildInfo() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return info.Main.Version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "dev-" + rev + dirty
}
