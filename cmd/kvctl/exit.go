package main

import (
	"errors"
	"fmt"

	"github.com/dialkv/dialkv/api/client"
)

// Exit codes. Each means one thing; scripts branch on them.
const (
	exitOK            = 0
	exitError         = 1
	exitUsage         = 2 // bad flags or arguments, malformed input
	exitUnavailable   = 3 // no leader, unreachable, timed out, or a write of unknown outcome
	exitNotFound      = 4
	exitCompareFailed = 5
	exitAuth          = 6 // PERMISSION_DENIED or UNAUTHENTICATED
)

// usageError marks a mistake in how kvctl was invoked.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// codedError forces an exit code where the error alone does not say it,
// e.g. "no endpoint reachable" built from heterogeneous failures.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// exitCode is the one place errors become exit codes.
func exitCode(err error) int {
	var (
		usage usageError
		coded codedError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &coded):
		return coded.code
	case client.IsAuthError(err):
		return exitAuth
	case client.IsInvalid(err):
		// The server refused the input (empty or oversized key, bad level):
		// the same class of mistake as a malformed argument.
		return exitUsage
	case client.IsCompareFailed(err):
		return exitCompareFailed
	case client.IsIndeterminate(err), client.IsUnavailable(err):
		return exitUnavailable
	case client.IsNotFound(err):
		return exitNotFound
	default:
		return exitError
	}
}
