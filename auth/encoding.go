package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// EncodingVersion is the version Encode writes and the only one
// DecodeState accepts. Bump it when the encoding changes meaning, and teach
// DecodeState the old one.
const EncodingVersion = 1

// wireState is the stored form: JSON with users and roles as sorted lists,
// so that equal states encode to equal bytes on every node.
type wireState struct {
	Version         int           `json:"version"`
	Enabled         bool          `json:"enabled"`
	Revision        uint64        `json:"revision"`
	RevocationBound time.Duration `json:"revocation_bound_ns"`
	SigningKey      []byte        `json:"signing_key"`
	Users           []User        `json:"users"`
	Roles           []Role        `json:"roles"`
}

// Encode returns the state's canonical stored form.
func (s *State) Encode() []byte {
	w := wireState{
		Version:         EncodingVersion,
		Enabled:         s.enabled,
		Revision:        s.revision,
		RevocationBound: s.bound,
		SigningKey:      s.signingKey,
		Users:           make([]User, 0, len(s.users)),
		Roles:           make([]Role, 0, len(s.roles)),
	}
	for _, name := range s.UserNames() {
		w.Users = append(w.Users, s.users[name])
	}
	for _, name := range s.RoleNames() {
		w.Roles = append(w.Roles, s.roles[name])
	}
	b, _ := json.Marshal(w) // cannot fail: no maps, channels or funcs
	return b
}

// DecodeState parses a stored state. It refuses other versions
// (ErrUnsupportedVersion) and anything Encode could not have produced from
// a state the mutations can reach (ErrCorrupt), so a damaged meta range is
// noticed rather than half-trusted.
func DecodeState(b []byte) (*State, error) {
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if v.Version != EncodingVersion {
		return nil, fmt.Errorf("%w: %d (this build reads %d)", ErrUnsupportedVersion, v.Version, EncodingVersion)
	}
	var w wireState
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrCorrupt)
	}
	s, err := fromWire(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return s, nil
}

func fromWire(w wireState) (*State, error) {
	if len(w.SigningKey) != SigningKeyBytes {
		return nil, fmt.Errorf("signing key is %d bytes", len(w.SigningKey))
	}
	if w.RevocationBound <= 0 {
		return nil, fmt.Errorf("revocation bound %s is not positive", w.RevocationBound)
	}
	s := &State{
		enabled:    w.Enabled,
		revision:   w.Revision,
		bound:      w.RevocationBound,
		signingKey: w.SigningKey,
		users:      make(map[string]User, len(w.Users)),
		roles:      make(map[string]Role, len(w.Roles)),
	}
	if !slices.IsSortedFunc(w.Roles, func(a, b Role) int { return strings.Compare(a.Name, b.Name) }) {
		return nil, fmt.Errorf("roles not sorted")
	}
	for _, r := range w.Roles {
		if err := validName("role", r.Name); err != nil {
			return nil, err
		}
		if _, dup := s.roles[r.Name]; dup {
			return nil, fmt.Errorf("role %q twice", r.Name)
		}
		for i, p := range r.Permissions {
			if err := p.validate(); err != nil {
				return nil, fmt.Errorf("role %q: %w", r.Name, err)
			}
			if i > 0 && comparePermissions(r.Permissions[i-1], p) >= 0 {
				return nil, fmt.Errorf("role %q: permissions not sorted and unique", r.Name)
			}
		}
		if r.Name == RootRole && len(r.Permissions) > 0 {
			return nil, fmt.Errorf("root role has explicit permissions")
		}
		if r.Permissions == nil {
			r.Permissions = []Permission{}
		}
		s.roles[r.Name] = r
	}
	if _, ok := s.roles[RootRole]; !ok {
		return nil, fmt.Errorf("no root role")
	}
	if !slices.IsSortedFunc(w.Users, func(a, b User) int { return strings.Compare(a.Name, b.Name) }) {
		return nil, fmt.Errorf("users not sorted")
	}
	for _, u := range w.Users {
		if err := validName("user", u.Name); err != nil {
			return nil, err
		}
		if _, dup := s.users[u.Name]; dup {
			return nil, fmt.Errorf("user %q twice", u.Name)
		}
		if err := validHash(u.PasswordHash); err != nil {
			return nil, fmt.Errorf("user %q: %w", u.Name, err)
		}
		if u.Generation > w.Revision {
			return nil, fmt.Errorf("user %q: generation %d is after revision %d", u.Name, u.Generation, w.Revision)
		}
		if !slices.IsSorted(u.Roles) || len(slices.Compact(slices.Clone(u.Roles))) != len(u.Roles) {
			return nil, fmt.Errorf("user %q: roles not sorted and unique", u.Name)
		}
		for _, r := range u.Roles {
			if _, ok := s.roles[r]; !ok {
				return nil, fmt.Errorf("user %q: role %q does not exist", u.Name, r)
			}
		}
		if u.Roles == nil {
			u.Roles = []string{}
		}
		s.users[u.Name] = u
	}
	if w.Enabled {
		if u, ok := s.users[RootUser]; !ok || !slices.Contains(u.Roles, RootRole) {
			return nil, ErrRootRequired
		}
	}
	return s, nil
}
