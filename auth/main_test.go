package auth

import (
	"bytes"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

// TestMain fails the package's tests when any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testKey is a fixed signing key so that states built by tests are
// reproducible.
func testKey() []byte { return bytes.Repeat([]byte{7}, SigningKeyBytes) }

// cheapHash hashes at bcrypt's minimum cost to keep tests fast; the state
// accepts any valid bcrypt cost.
func cheapHash(t testing.TB, password string) []byte {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// build applies muts to a fresh state, failing the test on any error.
func build(t testing.TB, muts ...Mutation) *State {
	t.Helper()
	s, err := NewState(testKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range muts {
		if s, _, err = m.Apply(s); err != nil {
			t.Fatalf("setup %+v: %v", m, err)
		}
	}
	return s
}

func addUser(name string, hash []byte) Mutation {
	return Mutation{Kind: MutAddUser, User: name, PasswordHash: hash}
}
func addRole(name string) Mutation { return Mutation{Kind: MutAddRole, Role: name} }
func grantRole(user, role string) Mutation {
	return Mutation{Kind: MutGrantRole, User: user, Role: role}
}
func grantPerm(role string, p Permission) Mutation {
	return Mutation{Kind: MutGrantPermission, Role: role, Permission: p}
}
func keyPerm(a Access, key string) Permission {
	return Permission{Access: a, Match: MatchKey, Key: []byte(key)}
}
func prefixPerm(a Access, prefix string) Permission {
	return Permission{Access: a, Match: MatchPrefix, Key: []byte(prefix)}
}
func rangePerm(a Access, start, end string) Permission {
	return Permission{Access: a, Match: MatchRange, Key: []byte(start), End: []byte(end)}
}

// rootSetup makes the root user with the root role, ready to enable.
func rootSetup() []Mutation {
	return []Mutation{addUser(RootUser, nil), grantRole(RootUser, RootRole)}
}

func enabled(extra ...Mutation) []Mutation {
	return append(append(rootSetup(), Mutation{Kind: MutEnable}), extra...)
}

func generation(t testing.TB, s *State, user string) uint64 {
	t.Helper()
	u, ok := s.User(user)
	if !ok {
		t.Fatalf("no user %q", user)
	}
	return u.Generation
}
