package auth

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// RootUser must exist, holding RootRole, before auth can be enabled.
	RootUser = "root"
	// RootRole is built in: it grants every permission and every admin verb
	// and cannot be deleted or edited.
	RootRole = "root"

	// DefaultRevocationBound is how long, at most, a node may keep honouring
	// a permission after it was revoked: the time since the node last
	// confirmed its auth state with the meta range's leader must stay within
	// it. Short enough to matter, long enough that a healthy node (which
	// confirms far more often) never refuses.
	DefaultRevocationBound = 5 * time.Second

	// SigningKeyBytes is the size of the HS256 token signing key.
	SigningKeyBytes = 32

	maxNameBytes = 128
	// maxKeyBytes matches the API's default key size limit: a permission on
	// a longer key could never match a request.
	maxKeyBytes = 4 << 10
)

// Access is what a permission allows on its keys.
type Access uint8

// The access levels a role may grant, as kvctl spells them.
const (
	Read      Access = 1
	Write     Access = 2
	ReadWrite Access = Read | Write
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("access(%d)", uint8(a))
}

// ParseAccess parses "read", "write" or "readwrite".
func ParseAccess(s string) (Access, error) {
	for _, a := range []Access{Read, Write, ReadWrite} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("%w: access %q is not read, write or readwrite", ErrInvalidPermission, s)
}

// Match says how a permission's Key (and End) select keys.
type Match uint8

// The shapes of key set a permission can name.
const (
	MatchKey    Match = 1 // exactly Key
	MatchPrefix Match = 2 // every key starting with Key; an empty Key is every key
	MatchRange  Match = 3 // [Key, End)
)

func (m Match) String() string {
	switch m {
	case MatchKey:
		return "key"
	case MatchPrefix:
		return "prefix"
	case MatchRange:
		return "range"
	}
	return fmt.Sprintf("match(%d)", uint8(m))
}

// Permission grants Access on the keys selected by Match, Key and End.
// Two permissions of a role with the same Match, Key and End are the same
// permission: granting again replaces its Access, revoking removes it.
type Permission struct {
	Access Access `json:"access"`
	Match  Match  `json:"match"`
	Key    []byte `json:"key"`
	End    []byte `json:"end,omitempty"`
}

func (p Permission) String() string {
	switch p.Match {
	case MatchPrefix:
		return fmt.Sprintf("%s prefix %q", p.Access, p.Key)
	case MatchRange:
		return fmt.Sprintf("%s [%q, %q)", p.Access, p.Key, p.End)
	}
	return fmt.Sprintf("%s key %q", p.Access, p.Key)
}

func (p Permission) clone() Permission {
	p.Key, p.End = bytes.Clone(p.Key), bytes.Clone(p.End)
	return p
}

// sameKeys reports whether p and q select the same keys the same way.
func (p Permission) sameKeys(q Permission) bool {
	return p.Match == q.Match && bytes.Equal(p.Key, q.Key) && bytes.Equal(p.End, q.End)
}

func (p Permission) validate() error {
	if p.Access != Read && p.Access != Write && p.Access != ReadWrite {
		return fmt.Errorf("%w: access %d is not read, write or readwrite", ErrInvalidPermission, p.Access)
	}
	if len(p.Key) > maxKeyBytes || len(p.End) > maxKeyBytes {
		return fmt.Errorf("%w: key is over %d bytes", ErrInvalidPermission, maxKeyBytes)
	}
	switch p.Match {
	case MatchKey:
		if len(p.Key) == 0 {
			return fmt.Errorf("%w: empty key (use an empty prefix for every key)", ErrInvalidPermission)
		}
		if len(p.End) > 0 {
			return fmt.Errorf("%w: a single-key permission has no end", ErrInvalidPermission)
		}
	case MatchPrefix:
		if len(p.End) > 0 {
			return fmt.Errorf("%w: a prefix permission has no end", ErrInvalidPermission)
		}
	case MatchRange:
		if len(p.Key) == 0 {
			return fmt.Errorf("%w: empty range start (use an empty prefix for every key)", ErrInvalidPermission)
		}
		if bytes.Compare(p.End, p.Key) <= 0 {
			return fmt.Errorf("%w: range end %q is not after start %q", ErrInvalidPermission, p.End, p.Key)
		}
	default:
		return fmt.Errorf("%w: match %d is not key, prefix or range", ErrInvalidPermission, p.Match)
	}
	return nil
}

// User is a user as stored. A user with no PasswordHash can only be
// identified by a client certificate naming it.
type User struct {
	Name         string   `json:"name"`
	PasswordHash []byte   `json:"password_hash,omitempty"`
	Roles        []string `json:"roles"` // sorted, unique
	// Generation is the Revision of the last change that affected this
	// user; tokens carry it, so they die with any such change and survive
	// all others. Taking it from the Revision keeps it unique across a
	// delete and re-add of the same name.
	Generation uint64 `json:"generation"`
}

func (u User) clone() User {
	u.PasswordHash = bytes.Clone(u.PasswordHash)
	u.Roles = slices.Clone(u.Roles)
	return u
}

// Role is a named set of permissions.
type Role struct {
	Name        string       `json:"name"`
	Permissions []Permission `json:"permissions"`
}

func (r Role) clone() Role {
	ps := make([]Permission, len(r.Permissions))
	for i, p := range r.Permissions {
		ps[i] = p.clone()
	}
	r.Permissions = ps
	return r
}

// State is the whole authorisation state of a cluster. It is immutable:
// methods that change it return a new State. The zero value is not usable;
// start from NewState or DecodeState.
type State struct {
	enabled    bool
	revision   uint64
	bound      time.Duration
	signingKey []byte
	users      map[string]User
	roles      map[string]Role
}

// NewSigningKey returns a fresh random token signing key for NewState.
func NewSigningKey() ([]byte, error) {
	k := make([]byte, SigningKeyBytes)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("auth: signing key: %w", err)
	}
	return k, nil
}

// NewState returns the initial state: auth disabled, no users, the built-in
// root role, revision 0 and DefaultRevocationBound. The signing key is a
// parameter, not made here, so that every replica applying the same
// bootstrap command builds the same state.
func NewState(signingKey []byte) (*State, error) {
	if len(signingKey) != SigningKeyBytes {
		return nil, fmt.Errorf("auth: signing key is %d bytes, want %d", len(signingKey), SigningKeyBytes)
	}
	return &State{
		bound:      DefaultRevocationBound,
		signingKey: bytes.Clone(signingKey),
		users:      map[string]User{},
		roles:      map[string]Role{RootRole: {Name: RootRole, Permissions: []Permission{}}},
	}, nil
}

// Enabled reports whether requests are checked at all.
func (s *State) Enabled() bool { return s.enabled }

// Revision counts the changes made to the state; it only grows.
func (s *State) Revision() uint64 { return s.revision }

// RevocationBound is how long a node may honour this state after it last
// confirmed it current; see Freshness.
func (s *State) RevocationBound() time.Duration { return s.bound }

// User returns a copy of the named user.
func (s *State) User(name string) (User, bool) {
	u, ok := s.users[name]
	return u.clone(), ok
}

// Role returns a copy of the named role.
func (s *State) Role(name string) (Role, bool) {
	r, ok := s.roles[name]
	return r.clone(), ok
}

// UserNames lists the users, sorted.
func (s *State) UserNames() []string { return slices.Sorted(maps.Keys(s.users)) }

// RoleNames lists the roles, sorted.
func (s *State) RoleNames() []string { return slices.Sorted(maps.Keys(s.roles)) }

// next returns a deep copy with the revision advanced, for a mutation to
// change; the receiver stays as it was whatever the mutation does.
func (s *State) next() *State {
	n := &State{
		enabled:    s.enabled,
		revision:   s.revision + 1,
		bound:      s.bound,
		signingKey: s.signingKey, // never changed in place
		users:      make(map[string]User, len(s.users)),
		roles:      make(map[string]Role, len(s.roles)),
	}
	for k, u := range s.users {
		n.users[k] = u.clone()
	}
	for k, r := range s.roles {
		n.roles[k] = r.clone()
	}
	return n
}

// validName accepts what a client certificate's common name usually holds,
// and nothing that would be ambiguous in kvctl's output or a log line.
func validName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty %s name", ErrInvalidName, kind)
	case len(name) > maxNameBytes:
		return fmt.Errorf("%w: %s name is %d bytes; the limit is %d", ErrInvalidName, kind, len(name), maxNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %s name %q is not UTF-8", ErrInvalidName, kind, name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %s name %q has a space or control character", ErrInvalidName, kind, name)
		}
	}
	return nil
}
