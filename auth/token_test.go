package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func tokenState(t *testing.T) *State {
	return build(t, enabled(addRole("app"), grantPerm("app", prefixPerm(Read, "a")),
		addRole("other"),
		addUser("alice", nil), grantRole("alice", "app"),
		addUser("bob", nil), grantRole("bob", "app"))...)
}

func issue(t *testing.T, iss *Issuer, s *State, user string) string {
	t.Helper()
	tok, _, err := iss.Issue(s, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantUnauth(t *testing.T, what string, err, reason error) {
	t.Helper()
	if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, reason) {
		t.Errorf("%s: err = %v, want %v and %v", what, err, ErrUnauthenticated, reason)
	}
}

func TestTokenIssueVerify(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)}
	iss := &Issuer{Now: clk.now}
	s := tokenState(t)
	tok, exp, err := iss.Issue(s, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.t.Add(DefaultTokenTTL).Truncate(time.Second); !exp.Equal(want) {
		t.Errorf("expires %v, want %v", exp, want)
	}
	if user, err := iss.Verify(tok, s); err != nil || user != "alice" {
		t.Fatalf("Verify = %q, %v", user, err)
	}

	// Another node decodes the same stored state and verifies the token.
	other, err := DecodeState(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if user, err := (&Issuer{Now: clk.now}).Verify(tok, other); err != nil || user != "alice" {
		t.Errorf("on another node: %q, %v", user, err)
	}

	// Just before expiry it verifies; at expiry it does not.
	clk.t = exp.Add(-time.Nanosecond)
	if _, err := iss.Verify(tok, s); err != nil {
		t.Errorf("before expiry: %v", err)
	}
	clk.t = exp.Add(time.Second)
	_, err = iss.Verify(tok, s)
	wantUnauth(t, "expired", err, ErrTokenExpired)

	// A configured TTL is honoured.
	clk.t = exp
	short := &Issuer{TTL: time.Minute, Now: clk.now}
	tok = issue(t, short, s, "alice")
	clk.t = clk.t.Add(2 * time.Minute)
	_, err = short.Verify(tok, s)
	wantUnauth(t, "short TTL", err, ErrTokenExpired)
}

func TestTokenRefused(t *testing.T) {
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	iss := &Issuer{Now: clk.now}
	s := tokenState(t)
	tok := issue(t, iss, s, "alice")
	parts := strings.Split(tok, ".")

	// Tampered: bob's payload under alice's signature.
	bobParts := strings.Split(issue(t, iss, s, "bob"), ".")
	tampered := parts[0] + "." + bobParts[1] + "." + parts[2]

	// Another first character: still base64, different top bits.
	sig := []byte(parts[2])
	if sig[0] = 'A'; parts[2][0] == 'A' {
		sig[0] = 'B'
	}
	flipped := parts[0] + "." + parts[1] + "." + string(sig)

	// Re-signed with another key.
	otherKeyState, err := NewState(make([]byte, SigningKeyBytes))
	if err != nil {
		t.Fatal(err)
	}
	var c claims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
		t.Fatal(err)
	}
	otherKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(otherKeyState.signingKey)
	if err != nil {
		t.Fatal(err)
	}
	// alg none, and HS512 with the right key: only HS256 is accepted.
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, c).SignedString(s.signingKey)
	if err != nil {
		t.Fatal(err)
	}
	// No expiry: refused even when correctly signed.
	noExp := c
	noExp.ExpiresAt = nil
	forever, err := jwt.NewWithClaims(jwt.SigningMethodHS256, noExp).SignedString(s.signingKey)
	if err != nil {
		t.Fatal(err)
	}
	noSub := c
	noSub.Subject = ""
	anonymous, err := jwt.NewWithClaims(jwt.SigningMethodHS256, noSub).SignedString(s.signingKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, token string
		reason      error
	}{
		{"tampered payload", tampered, ErrBadSignature},
		{"other key", otherKey, ErrBadSignature},
		{"alg none", none, ErrBadSignature},
		{"HS512", hs512, ErrBadSignature},
		{"flipped signature", flipped, ErrBadSignature},
		{"truncated signature", tok[:len(tok)-2], ErrTokenMalformed},
		{"no expiry", forever, ErrTokenMalformed},
		{"no subject", anonymous, ErrTokenMalformed},
		{"garbage", "not.a.token", ErrTokenMalformed},
		{"empty", "", ErrTokenMalformed},
		{"header only", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`)), ErrTokenMalformed},
	}
	for _, tt := range tests {
		user, err := iss.Verify(tt.token, s)
		if user != "" {
			t.Errorf("%s: verified as %q", tt.name, user)
		}
		wantUnauth(t, tt.name, err, tt.reason)
	}

	if _, _, err := iss.Issue(s, "ghost"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token for unknown user: %v", err)
	}
	off, _, err := s.Disable()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := iss.Issue(off, "alice"); !errors.Is(err, ErrAuthDisabled) {
		t.Errorf("token with auth disabled: %v", err)
	}
}

// A change that affects a user ends that user's tokens and no one else's;
// a change affecting no user ends no token.
func TestTokenGenerations(t *testing.T) {
	iss := &Issuer{}
	tests := []struct {
		name string
		m    Mutation
		dead map[string]error // users whose tokens stop verifying, and why
	}{
		{"unrelated user added", addUser("carol", nil), nil},
		{"unrelated role added", addRole("new"), nil},
		{"permission granted to a role they hold", grantPerm("app", keyPerm(Write, "z")), nil},
		{"role nobody holds deleted", Mutation{Kind: MutDeleteRole, Role: "other"}, nil},
		{"role granted", grantRole("alice", "other"), nil},
		{"role revoked from alice", Mutation{Kind: MutRevokeRole, User: "alice", Role: "app"},
			map[string]error{"alice": ErrGenerationChanged}},
		{"alice's password changed", Mutation{Kind: MutChangePassword, User: "alice", PasswordHash: cheapHash(t, "x")},
			map[string]error{"alice": ErrGenerationChanged}},
		{"alice deleted", Mutation{Kind: MutDeleteUser, User: "alice"},
			map[string]error{"alice": ErrUserGone}},
		{"permission revoked from their role", Mutation{Kind: MutRevokePermission, Role: "app", Permission: prefixPerm(0, "a")},
			map[string]error{"alice": ErrGenerationChanged, "bob": ErrGenerationChanged}},
		{"their role deleted", Mutation{Kind: MutDeleteRole, Role: "app"},
			map[string]error{"alice": ErrGenerationChanged, "bob": ErrGenerationChanged}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tokenState(t)
			toks := map[string]string{"alice": issue(t, iss, s, "alice"), "bob": issue(t, iss, s, "bob"), RootUser: issue(t, iss, s, RootUser)}
			s2, _, err := tt.m.Apply(s)
			if err != nil {
				t.Fatal(err)
			}
			for user, tok := range toks {
				got, err := iss.Verify(tok, s2)
				if reason, dead := tt.dead[user]; dead {
					wantUnauth(t, user, err, reason)
				} else if err != nil || got != user {
					t.Errorf("%s's token: %q, %v", user, got, err)
				}
			}
		})
	}

	// Deleting and re-adding a name does not revive the old tokens.
	s := tokenState(t)
	tok := issue(t, iss, s, "alice")
	s, _, err := s.DeleteUser("alice")
	if err != nil {
		t.Fatal(err)
	}
	if s, _, err = s.AddUser("alice", nil); err != nil {
		t.Fatal(err)
	}
	_, err = iss.Verify(tok, s)
	wantUnauth(t, "re-added user", err, ErrGenerationChanged)
}

func TestPasswords(t *testing.T) {
	// The dummy hash must cost what a real one costs, or unknown users
	// would answer faster than known ones.
	if cost, err := bcrypt.Cost([]byte(dummyHash)); err != nil || cost != bcrypt.DefaultCost {
		t.Fatalf("dummy hash cost %d, %v; want %d", cost, err, bcrypt.DefaultCost)
	}
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if cost, _ := bcrypt.Cost(h); cost != bcrypt.DefaultCost {
		t.Errorf("hash cost %d", cost)
	}
	for _, bad := range []string{"", strings.Repeat("p", maxPasswordBytes+1)} {
		if _, err := HashPassword(bad); !errors.Is(err, ErrInvalidPassword) {
			t.Errorf("HashPassword(%d bytes): %v", len(bad), err)
		}
	}

	s := build(t, addUser("alice", h), addUser("certonly", nil))
	if err := s.Authenticate("alice", "correct horse"); err != nil {
		t.Errorf("right password: %v", err)
	}
	var msgs []string
	for _, tt := range []struct{ user, password string }{
		{"alice", "wrong"},
		{"alice", ""},
		{"ghost", "correct horse"},
		{"certonly", ""},
		{"certonly", "anything"},
	} {
		err := s.Authenticate(tt.user, tt.password)
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%+v: %v", tt, err)
			continue
		}
		msgs = append(msgs, err.Error())
	}
	// One message for all failures: it must not tell names that exist.
	for _, m := range msgs {
		if m != msgs[0] {
			t.Errorf("failure messages differ: %q vs %q", m, msgs[0])
		}
	}
}

// A hash made at another cost (tests use bcrypt.MinCost) carries its
// cost, and checking a password against it works as at the default.
func TestHashPasswordCost(t *testing.T) {
	h, err := HashPasswordCost("pw", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bcrypt.Cost(h); err != nil || c != bcrypt.MinCost {
		t.Fatalf("cost %d (%v), want %d", c, err, bcrypt.MinCost)
	}
	if err := bcrypt.CompareHashAndPassword(h, []byte("pw")); err != nil {
		t.Fatalf("the right password: %v", err)
	}
	if _, err := HashPasswordCost("", bcrypt.MinCost); !errors.Is(err, ErrInvalidPassword) {
		t.Fatalf("an empty password: %v, want ErrInvalidPassword", err)
	}
}

// A token names the state revision it was issued at; anything that is
// not a token names none.
func TestTokenRevision(t *testing.T) {
	iss := &Issuer{}
	s := tokenState(t)
	tok := issue(t, iss, s, "alice")
	if got := TokenRevision(tok); got != s.Revision() || got == 0 {
		t.Fatalf("TokenRevision = %d, want the state's revision %d", got, s.Revision())
	}
	for _, bad := range []string{"", "garbage", "a.b.c", strings.Repeat(".", 3)} {
		if got := TokenRevision(bad); got != 0 {
			t.Errorf("TokenRevision(%q) = %d, want 0", bad, got)
		}
	}
}
