package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestMutations(t *testing.T) {
	hash := cheapHash(t, "secret")
	alice := []Mutation{addUser("alice", hash), addRole("app"), grantRole("alice", "app"),
		grantPerm("app", prefixPerm(ReadWrite, "app/")), addUser("bob", nil)}

	tests := []struct {
		name    string
		setup   []Mutation
		m       Mutation
		wantErr error
		// check inspects a successful result; before is the state the
		// mutation was applied to.
		check func(t *testing.T, before, after *State, r Result)
	}{
		{name: "add user with password", m: addUser("alice", hash),
			check: func(t *testing.T, _, after *State, r Result) {
				u, ok := after.User("alice")
				if !ok || !bytes.Equal(u.PasswordHash, hash) || len(u.Roles) != 0 || u.Generation != r.Revision {
					t.Errorf("user = %+v, %v", u, ok)
				}
				if r.Revokes {
					t.Error("adding a user revokes nothing")
				}
			}},
		{name: "add certificate-only user", m: addUser("client-cn.example", nil),
			check: func(t *testing.T, _, after *State, _ Result) {
				if u, ok := after.User("client-cn.example"); !ok || len(u.PasswordHash) != 0 {
					t.Errorf("user = %+v, %v", u, ok)
				}
			}},
		{name: "add user empty name", m: addUser("", hash), wantErr: ErrInvalidName},
		{name: "add user name with space", m: addUser("a b", hash), wantErr: ErrInvalidName},
		{name: "add user name with control", m: addUser("a\x00b", hash), wantErr: ErrInvalidName},
		{name: "add user name not utf8", m: addUser("a\xffb", hash), wantErr: ErrInvalidName},
		{name: "add user name too long", m: addUser(strings.Repeat("a", maxNameBytes+1), hash), wantErr: ErrInvalidName},
		{name: "add user twice", setup: alice, m: addUser("alice", nil), wantErr: ErrUserExists},
		{name: "add user bad hash", m: addUser("alice", []byte("plaintext")), wantErr: ErrInvalidPassword},

		{name: "delete user", setup: alice, m: Mutation{Kind: MutDeleteUser, User: "alice"},
			check: func(t *testing.T, _, after *State, r Result) {
				if _, ok := after.User("alice"); ok {
					t.Error("alice still there")
				}
				if !r.Revokes || !slices.Equal(r.Invalidated, []string{"alice"}) {
					t.Errorf("result = %+v", r)
				}
			}},
		{name: "delete missing user", m: Mutation{Kind: MutDeleteUser, User: "alice"}, wantErr: ErrUserNotFound},
		{name: "delete root while enabled", setup: enabled(), m: Mutation{Kind: MutDeleteUser, User: RootUser}, wantErr: ErrRootProtected},
		{name: "delete root while disabled", setup: rootSetup(), m: Mutation{Kind: MutDeleteUser, User: RootUser}},

		{name: "change password", setup: alice, m: Mutation{Kind: MutChangePassword, User: "alice", PasswordHash: cheapHash(t, "new")},
			check: func(t *testing.T, before, after *State, r Result) {
				if err := after.Authenticate("alice", "new"); err != nil {
					t.Error(err)
				}
				if err := after.Authenticate("alice", "secret"); !errors.Is(err, ErrUnauthenticated) {
					t.Errorf("old password: %v", err)
				}
				if generation(t, after, "alice") != r.Revision || generation(t, after, "bob") != generation(t, before, "bob") {
					t.Error("generation bump wrong")
				}
				if !r.Revokes {
					t.Error("old password should be reported as revoked")
				}
			}},
		{name: "change password missing user", m: Mutation{Kind: MutChangePassword, User: "x", PasswordHash: hash}, wantErr: ErrUserNotFound},
		{name: "change password bad hash", setup: alice, m: Mutation{Kind: MutChangePassword, User: "alice", PasswordHash: []byte("$2a$")}, wantErr: ErrInvalidPassword},

		{name: "grant role", setup: alice, m: grantRole("bob", "app"),
			check: func(t *testing.T, before, after *State, r Result) {
				u, _ := after.User("bob")
				if !slices.Equal(u.Roles, []string{"app"}) {
					t.Errorf("roles = %v", u.Roles)
				}
				// Granting adds access: bob's tokens survive.
				if u.Generation != generation(t, before, "bob") || len(r.Invalidated) != 0 || r.Revokes {
					t.Errorf("grant invalidated tokens: %+v", r)
				}
			}},
		{name: "grant role missing user", setup: alice, m: grantRole("carol", "app"), wantErr: ErrUserNotFound},
		{name: "grant role missing role", setup: alice, m: grantRole("bob", "nope"), wantErr: ErrRoleNotFound},
		{name: "grant role twice", setup: alice, m: grantRole("alice", "app"), wantErr: ErrRoleAlreadyGranted},

		{name: "revoke role", setup: append(alice, grantRole("bob", "app")), m: Mutation{Kind: MutRevokeRole, User: "alice", Role: "app"},
			check: func(t *testing.T, before, after *State, r Result) {
				u, _ := after.User("alice")
				if len(u.Roles) != 0 || u.Generation != r.Revision {
					t.Errorf("alice = %+v", u)
				}
				if generation(t, after, "bob") != generation(t, before, "bob") {
					t.Error("bob's generation changed")
				}
				if !r.Revokes || r.Bound != DefaultRevocationBound || !slices.Equal(r.Invalidated, []string{"alice"}) {
					t.Errorf("result = %+v", r)
				}
			}},
		{name: "revoke role not granted", setup: alice, m: Mutation{Kind: MutRevokeRole, User: "bob", Role: "app"}, wantErr: ErrRoleNotGranted},
		{name: "revoke role missing user", setup: alice, m: Mutation{Kind: MutRevokeRole, User: "carol", Role: "app"}, wantErr: ErrUserNotFound},
		{name: "revoke role missing role", setup: alice, m: Mutation{Kind: MutRevokeRole, User: "alice", Role: "nope"}, wantErr: ErrRoleNotFound},
		{name: "revoke root from root while enabled", setup: enabled(), m: Mutation{Kind: MutRevokeRole, User: RootUser, Role: RootRole}, wantErr: ErrRootProtected},
		{name: "revoke role while enabled", setup: enabled(alice...), m: Mutation{Kind: MutRevokeRole, User: "alice", Role: "app"}},

		{name: "add role", m: addRole("reader"),
			check: func(t *testing.T, _, after *State, _ Result) {
				if r, ok := after.Role("reader"); !ok || len(r.Permissions) != 0 {
					t.Errorf("role = %+v, %v", r, ok)
				}
			}},
		{name: "add role twice", setup: alice, m: addRole("app"), wantErr: ErrRoleExists},
		{name: "add root role", m: addRole(RootRole), wantErr: ErrRoleExists},
		{name: "add role bad name", m: addRole("a\tb"), wantErr: ErrInvalidName},

		{name: "delete role held by two", setup: append(alice, grantRole("bob", "app"), addUser("carol", nil)), m: Mutation{Kind: MutDeleteRole, Role: "app"},
			check: func(t *testing.T, before, after *State, r Result) {
				if _, ok := after.Role("app"); ok {
					t.Error("role still there")
				}
				for _, name := range []string{"alice", "bob"} {
					if u, _ := after.User(name); len(u.Roles) != 0 || u.Generation != r.Revision {
						t.Errorf("%s = %+v", name, u)
					}
				}
				if generation(t, after, "carol") != generation(t, before, "carol") {
					t.Error("carol's generation changed")
				}
				if !r.Revokes || !slices.Equal(r.Invalidated, []string{"alice", "bob"}) {
					t.Errorf("result = %+v", r)
				}
			}},
		{name: "delete missing role", m: Mutation{Kind: MutDeleteRole, Role: "app"}, wantErr: ErrRoleNotFound},
		{name: "delete root role", m: Mutation{Kind: MutDeleteRole, Role: RootRole}, wantErr: ErrRootProtected},

		{name: "grant key", setup: alice, m: grantPerm("app", keyPerm(Read, "config")),
			check: func(t *testing.T, before, after *State, r Result) {
				role, _ := after.Role("app")
				want := []Permission{prefixPerm(ReadWrite, "app/"), keyPerm(Read, "config")}
				if len(role.Permissions) != 2 || !role.Permissions[0].sameKeys(want[0]) || !role.Permissions[1].sameKeys(want[1]) {
					t.Errorf("permissions = %v", role.Permissions)
				}
				if r.Revokes || generation(t, after, "alice") != generation(t, before, "alice") {
					t.Error("a grant invalidated alice's tokens")
				}
			}},
		{name: "grant empty prefix", setup: alice, m: grantPerm("app", prefixPerm(Read, ""))},
		{name: "grant range", setup: alice, m: grantPerm("app", rangePerm(Write, "a", "b"))},
		{name: "grant widens", setup: alice, m: grantPerm("app", prefixPerm(ReadWrite, "app/")),
			check: func(t *testing.T, before, after *State, r Result) {
				if r.Changed || after != before {
					t.Errorf("same grant again changed the state: %+v", r)
				}
			}},
		{name: "grant narrows", setup: alice, m: grantPerm("app", prefixPerm(Read, "app/")),
			check: func(t *testing.T, _, after *State, r Result) {
				role, _ := after.Role("app")
				if len(role.Permissions) != 1 || role.Permissions[0].Access != Read {
					t.Errorf("permissions = %v", role.Permissions)
				}
				if !r.Revokes || !slices.Equal(r.Invalidated, []string{"alice"}) {
					t.Errorf("narrowing should revoke: %+v", r)
				}
			}},
		{name: "grant to missing role", m: grantPerm("app", keyPerm(Read, "k")), wantErr: ErrRoleNotFound},
		{name: "grant to root role", m: grantPerm(RootRole, keyPerm(Read, "k")), wantErr: ErrRootProtected},
		{name: "grant empty key", setup: alice, m: grantPerm("app", keyPerm(Read, "")), wantErr: ErrInvalidPermission},
		{name: "grant key with end", setup: alice, m: grantPerm("app", Permission{Access: Read, Match: MatchKey, Key: []byte("a"), End: []byte("b")}), wantErr: ErrInvalidPermission},
		{name: "grant prefix with end", setup: alice, m: grantPerm("app", Permission{Access: Read, Match: MatchPrefix, Key: []byte("a"), End: []byte("b")}), wantErr: ErrInvalidPermission},
		{name: "grant range end before start", setup: alice, m: grantPerm("app", rangePerm(Read, "b", "a")), wantErr: ErrInvalidPermission},
		{name: "grant range end equals start", setup: alice, m: grantPerm("app", rangePerm(Read, "b", "b")), wantErr: ErrInvalidPermission},
		{name: "grant range no end", setup: alice, m: grantPerm("app", rangePerm(Read, "b", "")), wantErr: ErrInvalidPermission},
		{name: "grant range empty start", setup: alice, m: grantPerm("app", rangePerm(Read, "", "b")), wantErr: ErrInvalidPermission},
		{name: "grant no access", setup: alice, m: grantPerm("app", keyPerm(0, "k")), wantErr: ErrInvalidPermission},
		{name: "grant unknown access", setup: alice, m: grantPerm("app", keyPerm(4, "k")), wantErr: ErrInvalidPermission},
		{name: "grant unknown match", setup: alice, m: grantPerm("app", Permission{Access: Read, Key: []byte("k")}), wantErr: ErrInvalidPermission},
		{name: "grant key too long", setup: alice, m: grantPerm("app", keyPerm(Read, strings.Repeat("k", maxKeyBytes+1))), wantErr: ErrInvalidPermission},

		{name: "revoke permission", setup: append(alice, grantPerm("app", keyPerm(Read, "config"))),
			m: Mutation{Kind: MutRevokePermission, Role: "app", Permission: Permission{Match: MatchPrefix, Key: []byte("app/")}},
			check: func(t *testing.T, _, after *State, r Result) {
				role, _ := after.Role("app")
				if len(role.Permissions) != 1 || string(role.Permissions[0].Key) != "config" {
					t.Errorf("permissions = %v", role.Permissions)
				}
				if !r.Revokes || !slices.Equal(r.Invalidated, []string{"alice"}) || generation(t, after, "alice") != r.Revision {
					t.Errorf("result = %+v", r)
				}
			}},
		{name: "revoke permission wrong match", setup: alice,
			m: Mutation{Kind: MutRevokePermission, Role: "app", Permission: keyPerm(ReadWrite, "app/")}, wantErr: ErrPermissionNotFound},
		{name: "revoke permission missing role",
			m: Mutation{Kind: MutRevokePermission, Role: "app", Permission: keyPerm(ReadWrite, "app/")}, wantErr: ErrRoleNotFound},

		{name: "enable", setup: rootSetup(), m: Mutation{Kind: MutEnable},
			check: func(t *testing.T, _, after *State, r Result) {
				if !after.Enabled() || !r.Revokes {
					t.Errorf("enabled %v, result %+v", after.Enabled(), r)
				}
			}},
		{name: "enable without root user", m: Mutation{Kind: MutEnable}, wantErr: ErrRootRequired},
		{name: "enable root without root role", setup: []Mutation{addUser(RootUser, nil)}, m: Mutation{Kind: MutEnable}, wantErr: ErrRootRequired},
		{name: "enable twice", setup: enabled(), m: Mutation{Kind: MutEnable},
			check: func(t *testing.T, before, after *State, r Result) {
				if r.Changed || after != before || r.Revision != before.Revision() {
					t.Errorf("result %+v", r)
				}
			}},
		{name: "disable", setup: enabled(), m: Mutation{Kind: MutDisable},
			check: func(t *testing.T, _, after *State, r Result) {
				if after.Enabled() || r.Revokes {
					t.Errorf("enabled %v, result %+v", after.Enabled(), r)
				}
			}},
		{name: "disable when disabled", m: Mutation{Kind: MutDisable},
			check: func(t *testing.T, before, after *State, r Result) {
				if r.Changed || after != before {
					t.Errorf("result %+v", r)
				}
			}},
		{name: "unknown mutation", m: Mutation{Kind: "user-frobnicate"}, wantErr: ErrUnknownMutation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := build(t, tt.setup...)
			enc := before.Encode()
			after, r, err := tt.m.Apply(before)
			if !bytes.Equal(before.Encode(), enc) {
				t.Fatal("mutation changed the state it was applied to")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if after != before || r.Changed || r.Revision != before.Revision() {
					t.Fatalf("failed mutation returned a different state or result %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if r.Changed && (r.Revision != before.Revision()+1 || after.Revision() != r.Revision) {
				t.Errorf("revision %d -> %d, result %d", before.Revision(), after.Revision(), r.Revision)
			}
			if r.Revokes != (r.Bound == after.RevocationBound()) || (!r.Revokes && r.Bound != 0) {
				t.Errorf("bound %s with revokes %v", r.Bound, r.Revokes)
			}
			if _, err := DecodeState(after.Encode()); err != nil {
				t.Errorf("result does not decode: %v", err)
			}
			if tt.check != nil {
				tt.check(t, before, after, r)
			}
		})
	}
}

// Replicas applying the same mutations, decoded from the log, must build
// byte-identical states.
func TestMutationsDeterministic(t *testing.T) {
	muts := enabled(addRole("b"), addRole("a"), grantPerm("a", prefixPerm(Read, "z")),
		grantPerm("a", keyPerm(Write, "k")), grantPerm("a", rangePerm(ReadWrite, "m", "n")),
		addUser("u2", cheapHash(t, "p")), addUser("u1", nil), grantRole("u1", "b"), grantRole("u1", "a"),
		Mutation{Kind: MutRevokeRole, User: "u1", Role: "b"})
	var encs [][]byte
	for range 2 {
		s := build(t)
		for _, m := range muts {
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var got Mutation
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if s, _, err = got.Apply(s); err != nil {
				t.Fatal(err)
			}
		}
		encs = append(encs, s.Encode())
	}
	if !bytes.Equal(encs[0], encs[1]) {
		t.Fatalf("replicas differ:\n%s\n%s", encs[0], encs[1])
	}
	// Grant order does not matter to the encoding either.
	x := build(t, addRole("r"), grantPerm("r", keyPerm(Read, "b")), grantPerm("r", keyPerm(Read, "a")))
	y := build(t, addRole("r"), grantPerm("r", keyPerm(Read, "a")), grantPerm("r", keyPerm(Read, "b")))
	if !bytes.Equal(x.Encode(), y.Encode()) {
		t.Fatalf("grant order shows in the encoding:\n%s\n%s", x.Encode(), y.Encode())
	}
}

func TestResultString(t *testing.T) {
	s := build(t, enabled(addUser("a", nil), addRole("r"), grantRole("a", "r"))...)
	_, r, err := s.RevokeRole("a", "r")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "lagging nodes may honour the old permission for at most 5s"; !strings.Contains(got, want) {
		t.Errorf("%q does not say %q", got, want)
	}
	_, r, _ = s.AddRole("x")
	if strings.Contains(r.String(), "lagging") {
		t.Errorf("%q mentions a bound for a change that revokes nothing", r.String())
	}
}
