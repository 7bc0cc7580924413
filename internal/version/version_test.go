package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString_PrefersTheStampedVersion(t *testing.T) {
	t.Cleanup(func() { Version = "" })
	Version = "v0.3.0-5-gabc1234"
	if got := String(); got != "v0.3.0-5-gabc1234 ("+runtime.Version()+")" {
		t.Fatalf("String() = %q", got)
	}
	Version = ""
	if got := String(); got == "" || strings.HasPrefix(got, " (") {
		t.Fatalf("String() without a stamp = %q; want the build's own version", got)
	}
}
