package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// DefaultTokenTTL is how long an issued token verifies.
const DefaultTokenTTL = 10 * time.Minute

// dummyHash is a bcrypt hash, at the cost HashPassword uses, of a password
// no one types. Authenticate compares against it when the user does not
// exist or has no password, so those answers take as long as a wrong
// password and do not reveal which user names exist.
const dummyHash = "$2a$10$v9.S/BCAmLVhPXMf00pnWuvAKCxSfYwBQ0Fvd3iLy3gyKQUjMQIyi"

// maxPasswordBytes is bcrypt's limit; longer passwords would be truncated
// silently by older implementations, so they are refused.
const maxPasswordBytes = 72

// HashPassword hashes a password for AddUser or ChangePassword. Call it
// before proposing the mutation: the hash is salted at random.
func HashPassword(password string) ([]byte, error) {
	return HashPasswordCost(password, bcrypt.DefaultCost)
}

// HashPasswordCost is HashPassword at a bcrypt cost of the caller's
// choosing. Tests use bcrypt.MinCost: at the default cost one hash or
// check takes about 60 ms of CPU, several seconds under the race detector
// on a loaded 2-core machine, which is what made a kvctl test time out.
func HashPasswordCost(password string, cost int) ([]byte, error) {
	if password == "" {
		return nil, fmt.Errorf("%w: empty password (omit the password for a certificate-only user)", ErrInvalidPassword)
	}
	if len(password) > maxPasswordBytes {
		return nil, fmt.Errorf("%w: password is %d bytes; the limit is %d", ErrInvalidPassword, len(password), maxPasswordBytes)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPassword, err)
	}
	return h, nil
}

// Authenticate checks user's password. Every failure (unknown user,
// certificate-only user, wrong password) returns the same error after the
// same amount of work.
func (s *State) Authenticate(user, password string) error {
	hash := []byte(dummyHash)
	u, ok := s.users[user]
	hasPassword := ok && len(u.PasswordHash) > 0
	if hasPassword {
		hash = u.PasswordHash
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(password)); err != nil || !hasPassword {
		return fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
	}
	return nil
}

// claims is a token's payload: the standard subject (user), issued-at and
// expiry, the user's generation when the token was issued, and the state's
// revision then (see TokenRevision).
type claims struct {
	Generation uint64 `json:"gen"`
	Revision   uint64 `json:"rev,omitempty"`
	jwt.RegisteredClaims
}

// TokenRevision returns the auth state revision a token was issued at,
// read without verifying the token (0 when it names none or is not a
// token). A node holding an older state than that must catch up before it
// decides a request carrying the token: the token's holder has seen auth
// changes the node has not (auth turned on, a role granted), and deciding
// on the older state would surprise them within the revocation bound. It
// is only a hint: forging it costs the forger a refresh, nothing more.
func TokenRevision(token string) uint64 {
	var c claims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		return 0
	}
	return c.Revision
}

// Issuer issues and verifies HS256 JWTs signed with the state's signing
// key, so a token from any node verifies on every node. The zero value
// issues tokens valid for DefaultTokenTTL by the system clock.
type Issuer struct {
	// TTL is how long a token verifies; zero means DefaultTokenTTL.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (i *Issuer) now() time.Time {
	if i.Now != nil {
		return i.Now()
	}
	return time.Now()
}

// Issue returns a token for user (already authenticated by password or
// certificate) and when it expires.
func (i *Issuer) Issue(s *State, user string) (token string, expires time.Time, err error) {
	if !s.enabled {
		return "", time.Time{}, ErrAuthDisabled
	}
	u, ok := s.users[user]
	if !ok {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrUserGone)
	}
	ttl := i.TTL
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	now := i.now()
	expires = now.Add(ttl).Truncate(time.Second) // JWT times are whole seconds
	c := claims{
		Generation: u.Generation,
		Revision:   s.revision,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expires),
		},
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.signingKey)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return token, expires, nil
}

// Verify returns the user a token was issued to, if it is signed with the
// state's key, unexpired, and its user still exists at the generation the
// token names. Otherwise the error is ErrUnauthenticated joined with the
// reason (ErrTokenExpired, ErrBadSignature, ErrTokenMalformed, ErrUserGone,
// ErrGenerationChanged).
func (i *Issuer) Verify(token string, s *State) (user string, err error) {
	var c claims
	_, err = jwt.ParseWithClaims(token, &c,
		func(*jwt.Token) (any, error) { return s.signingKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(i.now),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, ErrBadSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, ErrTokenExpired)
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, ErrTokenMalformed)
	case c.Subject == "":
		return "", fmt.Errorf("%w: %w: no subject", ErrUnauthenticated, ErrTokenMalformed)
	}
	u, ok := s.users[c.Subject]
	if !ok {
		return "", fmt.Errorf("%w: %w: %q", ErrUnauthenticated, ErrUserGone, c.Subject)
	}
	if u.Generation != c.Generation {
		return "", fmt.Errorf("%w: %w: %q", ErrUnauthenticated, ErrGenerationChanged, c.Subject)
	}
	return c.Subject, nil
}
