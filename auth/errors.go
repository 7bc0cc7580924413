package auth

import "errors"

// Errors of mutations. Each is returned wrapped with the details; test with
// errors.Is.
var (
	ErrInvalidName        = errors.New("invalid name")
	ErrInvalidPermission  = errors.New("invalid permission")
	ErrInvalidPassword    = errors.New("invalid password")
	ErrUserExists         = errors.New("user already exists")
	ErrUserNotFound       = errors.New("user not found")
	ErrRoleExists         = errors.New("role already exists")
	ErrRoleNotFound       = errors.New("role not found")
	ErrRoleAlreadyGranted = errors.New("user already has the role")
	ErrRoleNotGranted     = errors.New("user does not have the role")
	ErrPermissionNotFound = errors.New("role has no such permission")
	ErrRootRequired       = errors.New("auth enable needs a root user with the root role")
	ErrUnknownMutation    = errors.New("unknown auth mutation")
	ErrRootProtected      = errors.New("the root role cannot be changed, and the root user cannot lose it while auth is enabled")
)

// Errors of checks.
var (
	// ErrPermissionDenied: the user is known but may not do this
	// (PERMISSION_DENIED, HTTP 403).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnauthenticated: no acceptable credentials (UNAUTHENTICATED, HTTP
	// 401). Returned joined with one of the reasons below, or for a bad
	// password with no reason, so as not to tell which part was wrong.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrAuthStale: this node cannot vouch that its auth state is within
	// the revocation bound, so it honours no permission (UNAVAILABLE).
	ErrAuthStale = errors.New("auth state not confirmed within the revocation bound")
	// ErrAuthDisabled: tokens are issued only while auth is enabled.
	ErrAuthDisabled = errors.New("auth is not enabled")
)

// Reasons a token is refused, each returned together with
// ErrUnauthenticated.
var (
	ErrTokenExpired      = errors.New("token expired")
	ErrBadSignature      = errors.New("token signature invalid")
	ErrTokenMalformed    = errors.New("token malformed")
	ErrUserGone          = errors.New("token's user no longer exists")
	ErrGenerationChanged = errors.New("token's user changed since it was issued")
)

// Errors of decoding a stored state.
var (
	ErrUnsupportedVersion = errors.New("unsupported auth state version")
	ErrCorrupt            = errors.New("corrupt auth state")
)
