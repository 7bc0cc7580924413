package auth

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Result describes what a successful mutation did.
type Result struct {
	// Revision is the state's revision after the mutation.
	Revision uint64
	// Changed is false when the mutation had nothing to do (enabling auth
	// that was enabled); the state and its revision are then unchanged.
	Changed bool
	// Invalidated lists the users whose generation the mutation bumped:
	// their tokens no longer verify. Sorted.
	Invalidated []string
	// Revokes reports that the mutation took access away from someone.
	// Nodes that have not yet applied it may honour the old access for at
	// most Bound after the mutation returns.
	Revokes bool
	Bound   time.Duration
}

// String is the note kvctl prints after a mutation.
func (r Result) String() string {
	switch {
	case !r.Changed:
		return fmt.Sprintf("no change (auth revision %d)", r.Revision)
	case r.Revokes:
		return fmt.Sprintf("auth revision %d; lagging nodes may honour the old permission for at most %s", r.Revision, r.Bound)
	}
	return fmt.Sprintf("auth revision %d", r.Revision)
}

// change tracks one mutation's effect on a copy of the state.
type change struct {
	n           *State
	invalidated []string
	revokes     bool
}

func (s *State) begin() *change { return &change{n: s.next()} }

// touch bumps a user's generation, ending their tokens.
func (c *change) touch(user string) {
	u := c.n.users[user]
	u.Generation = c.n.revision
	c.n.users[user] = u
	if !slices.Contains(c.invalidated, user) {
		c.invalidated = append(c.invalidated, user)
	}
}

// holders lists the users holding role.
func (c *change) holders(role string) []string {
	var out []string
	for name, u := range c.n.users {
		if slices.Contains(u.Roles, role) {
			out = append(out, name)
		}
	}
	return out
}

func (c *change) done() (*State, Result, error) {
	slices.Sort(c.invalidated)
	r := Result{Revision: c.n.revision, Changed: true, Invalidated: c.invalidated, Revokes: c.revokes}
	if c.revokes {
		r.Bound = c.n.bound
	}
	return c.n, r, nil
}

// fail returns the unchanged state with err, so that s, r, err =
// s.Mutation(...) keeps s as it was.
func (s *State) fail(err error) (*State, Result, error) {
	return s, Result{Revision: s.revision}, err
}

// unchanged is a successful mutation with nothing to do.
func (s *State) unchanged() (*State, Result, error) {
	return s, Result{Revision: s.revision}, nil
}

// validHash accepts an empty hash (a certificate-only user) or a bcrypt
// hash. Hashing happens before the mutation is proposed, because bcrypt
// salts randomly and replicas must build identical states.
func validHash(hash []byte) error {
	if len(hash) == 0 {
		return nil
	}
	if _, err := bcrypt.Cost(hash); err != nil {
		return fmt.Errorf("%w: password hash is not bcrypt: %w", ErrInvalidPassword, err)
	}
	return nil
}

// AddUser adds a user with a bcrypt password hash (see HashPassword), or
// with none for a user identified only by a client certificate.
func (s *State) AddUser(name string, passwordHash []byte) (*State, Result, error) {
	if err := validName("user", name); err != nil {
		return s.fail(err)
	}
	if _, ok := s.users[name]; ok {
		return s.fail(fmt.Errorf("add user %q: %w", name, ErrUserExists))
	}
	if err := validHash(passwordHash); err != nil {
		return s.fail(fmt.Errorf("add user %q: %w", name, err))
	}
	c := s.begin()
	c.n.users[name] = User{Name: name, PasswordHash: bytes.Clone(passwordHash), Roles: []string{}, Generation: c.n.revision}
	return c.done()
}

// DeleteUser removes a user; their tokens stop verifying. The root user
// cannot be deleted while auth is enabled.
func (s *State) DeleteUser(name string) (*State, Result, error) {
	if _, ok := s.users[name]; !ok {
		return s.fail(fmt.Errorf("delete user %q: %w", name, ErrUserNotFound))
	}
	if name == RootUser && s.enabled {
		return s.fail(fmt.Errorf("delete user %q: %w", name, ErrRootProtected))
	}
	c := s.begin()
	delete(c.n.users, name)
	c.invalidated, c.revokes = []string{name}, true
	return c.done()
}

// ChangePassword replaces a user's password hash (an empty hash leaves the
// user certificate-only). The user's tokens stop verifying.
func (s *State) ChangePassword(name string, passwordHash []byte) (*State, Result, error) {
	if _, ok := s.users[name]; !ok {
		return s.fail(fmt.Errorf("change password of %q: %w", name, ErrUserNotFound))
	}
	if err := validHash(passwordHash); err != nil {
		return s.fail(fmt.Errorf("change password of %q: %w", name, err))
	}
	c := s.begin()
	u := c.n.users[name]
	u.PasswordHash = bytes.Clone(passwordHash)
	c.n.users[name] = u
	c.touch(name)
	c.revokes = true // the old password works on a lagging node until the bound
	return c.done()
}

// GrantRole gives a user a role. Granting adds access, so existing tokens
// stay valid.
func (s *State) GrantRole(user, role string) (*State, Result, error) {
	u, ok := s.users[user]
	if !ok {
		return s.fail(fmt.Errorf("grant role %q to %q: %w", role, user, ErrUserNotFound))
	}
	if _, ok := s.roles[role]; !ok {
		return s.fail(fmt.Errorf("grant role %q to %q: %w", role, user, ErrRoleNotFound))
	}
	if slices.Contains(u.Roles, role) {
		return s.fail(fmt.Errorf("grant role %q to %q: %w", role, user, ErrRoleAlreadyGranted))
	}
	c := s.begin()
	u = c.n.users[user]
	u.Roles = append(u.Roles, role)
	slices.Sort(u.Roles)
	c.n.users[user] = u
	return c.done()
}

// RevokeRole takes a role from a user; the user's tokens stop verifying.
// The root user keeps the root role while auth is enabled.
func (s *State) RevokeRole(user, role string) (*State, Result, error) {
	u, ok := s.users[user]
	if !ok {
		return s.fail(fmt.Errorf("revoke role %q from %q: %w", role, user, ErrUserNotFound))
	}
	if _, ok := s.roles[role]; !ok {
		return s.fail(fmt.Errorf("revoke role %q from %q: %w", role, user, ErrRoleNotFound))
	}
	if !slices.Contains(u.Roles, role) {
		return s.fail(fmt.Errorf("revoke role %q from %q: %w", role, user, ErrRoleNotGranted))
	}
	if user == RootUser && role == RootRole && s.enabled {
		return s.fail(fmt.Errorf("revoke role %q from %q: %w", role, user, ErrRootProtected))
	}
	c := s.begin()
	u = c.n.users[user]
	u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == role })
	c.n.users[user] = u
	c.touch(user)
	c.revokes = true
	return c.done()
}

// AddRole adds a role with no permissions.
func (s *State) AddRole(name string) (*State, Result, error) {
	if err := validName("role", name); err != nil {
		return s.fail(err)
	}
	if _, ok := s.roles[name]; ok {
		return s.fail(fmt.Errorf("add role %q: %w", name, ErrRoleExists))
	}
	c := s.begin()
	c.n.roles[name] = Role{Name: name, Permissions: []Permission{}}
	return c.done()
}

// DeleteRole removes a role and takes it from every user holding it; their
// tokens stop verifying. The root role cannot be deleted.
func (s *State) DeleteRole(name string) (*State, Result, error) {
	if _, ok := s.roles[name]; !ok {
		return s.fail(fmt.Errorf("delete role %q: %w", name, ErrRoleNotFound))
	}
	if name == RootRole {
		return s.fail(fmt.Errorf("delete role %q: %w", name, ErrRootProtected))
	}
	c := s.begin()
	delete(c.n.roles, name)
	for _, user := range c.holders(name) {
		u := c.n.users[user]
		u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return r == name })
		c.n.users[user] = u
		c.touch(user)
	}
	c.revokes = true
	return c.done()
}

// GrantPermission adds p to a role, or, if the role has a permission on the
// same keys, sets its access to p.Access. Narrowing an access (readwrite to
// read) is a revocation: the holders' tokens stop verifying.
func (s *State) GrantPermission(role string, p Permission) (*State, Result, error) {
	if _, ok := s.roles[role]; !ok {
		return s.fail(fmt.Errorf("grant %s to role %q: %w", p, role, ErrRoleNotFound))
	}
	if role == RootRole {
		return s.fail(fmt.Errorf("grant %s to role %q: %w", p, role, ErrRootProtected))
	}
	if err := p.validate(); err != nil {
		return s.fail(fmt.Errorf("grant to role %q: %w", role, err))
	}
	r := s.roles[role]
	i := slices.IndexFunc(r.Permissions, p.sameKeys)
	if i >= 0 && r.Permissions[i].Access == p.Access {
		return s.unchanged()
	}
	c := s.begin()
	r = c.n.roles[role]
	if i >= 0 {
		narrowed := r.Permissions[i].Access&^p.Access != 0
		r.Permissions[i].Access = p.Access
		if narrowed {
			for _, u := range c.holders(role) {
				c.touch(u)
			}
			c.revokes = true
		}
	} else {
		r.Permissions = append(r.Permissions, p.clone())
		slices.SortFunc(r.Permissions, comparePermissions)
	}
	c.n.roles[role] = r
	return c.done()
}

// RevokePermission removes the role's permission on the same keys as p
// (p.Access is ignored, as etcdctl's role revoke-permission takes none).
// The holders' tokens stop verifying.
func (s *State) RevokePermission(role string, p Permission) (*State, Result, error) {
	r, ok := s.roles[role]
	if !ok {
		return s.fail(fmt.Errorf("revoke %s from role %q: %w", p, role, ErrRoleNotFound))
	}
	i := slices.IndexFunc(r.Permissions, p.sameKeys)
	if i < 0 {
		return s.fail(fmt.Errorf("revoke %s %q from role %q: %w", p.Match, p.Key, role, ErrPermissionNotFound))
	}
	c := s.begin()
	r = c.n.roles[role]
	r.Permissions = slices.Delete(r.Permissions, i, i+1)
	c.n.roles[role] = r
	for _, u := range c.holders(role) {
		c.touch(u)
	}
	c.revokes = true
	return c.done()
}

// Enable turns checking on. It needs the root user holding the root role,
// so that someone can still administer the cluster. Enabling takes access
// away from everyone without credentials, hence Revokes.
func (s *State) Enable() (*State, Result, error) {
	if s.enabled {
		return s.unchanged()
	}
	if u, ok := s.users[RootUser]; !ok || !slices.Contains(u.Roles, RootRole) {
		return s.fail(fmt.Errorf("enable auth: %w", ErrRootRequired))
	}
	c := s.begin()
	c.n.enabled = true
	c.revokes = true
	return c.done()
}

// Disable turns checking off; every request is then allowed.
func (s *State) Disable() (*State, Result, error) {
	if !s.enabled {
		return s.unchanged()
	}
	c := s.begin()
	c.n.enabled = false
	return c.done()
}

// comparePermissions orders a role's permissions canonically, so that the
// encoded state does not depend on the order of grants.
func comparePermissions(a, b Permission) int {
	if c := bytes.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	if a.Match != b.Match {
		return int(a.Match) - int(b.Match)
	}
	return bytes.Compare(a.End, b.End)
}

// MutationKind names a mutation in a replicated command.
type MutationKind string

// The mutations, named as kvctl's subcommands.
const (
	MutAddUser          MutationKind = "user-add"
	MutDeleteUser       MutationKind = "user-delete"
	MutChangePassword   MutationKind = "user-passwd"
	MutGrantRole        MutationKind = "user-grant-role"
	MutRevokeRole       MutationKind = "user-revoke-role"
	MutAddRole          MutationKind = "role-add"
	MutDeleteRole       MutationKind = "role-delete"
	MutGrantPermission  MutationKind = "role-grant-permission"
	MutRevokePermission MutationKind = "role-revoke-permission"
	MutEnable           MutationKind = "auth-enable"
	MutDisable          MutationKind = "auth-disable"
)

// Mutation is one change as a value, for the server to put in a Raft
// command and apply on every replica. It holds only deterministic inputs:
// the password is already hashed.
type Mutation struct {
	Kind         MutationKind `json:"kind"`
	User         string       `json:"user,omitempty"`
	Role         string       `json:"role,omitempty"`
	PasswordHash []byte       `json:"password_hash,omitempty"`
	Permission   Permission   `json:"permission,omitzero"`
}

// Apply applies m to s; like the methods it calls, it leaves s unchanged.
func (m Mutation) Apply(s *State) (*State, Result, error) {
	switch m.Kind {
	case MutAddUser:
		return s.AddUser(m.User, m.PasswordHash)
	case MutDeleteUser:
		return s.DeleteUser(m.User)
	case MutChangePassword:
		return s.ChangePassword(m.User, m.PasswordHash)
	case MutGrantRole:
		return s.GrantRole(m.User, m.Role)
	case MutRevokeRole:
		return s.RevokeRole(m.User, m.Role)
	case MutAddRole:
		return s.AddRole(m.Role)
	case MutDeleteRole:
		return s.DeleteRole(m.Role)
	case MutGrantPermission:
		return s.GrantPermission(m.Role, m.Permission)
	case MutRevokePermission:
		return s.RevokePermission(m.Role, m.Permission)
	case MutEnable:
		return s.Enable()
	case MutDisable:
		return s.Disable()
	}
	return s.fail(fmt.Errorf("%w %q", ErrUnknownMutation, m.Kind))
}
