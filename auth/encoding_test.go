package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func richState(t testing.TB) *State {
	return build(t, enabled(
		addRole("app"),
		grantPerm("app", prefixPerm(ReadWrite, "app/")),
		grantPerm("app", keyPerm(Read, "\x00config\xff")),
		grantPerm("app", rangePerm(Write, "m", "p")),
		grantPerm("app", prefixPerm(Read, "")),
		addRole("empty"),
		addUser("alice", cheapHash(t, "pw")), grantRole("alice", "app"), grantRole("alice", "empty"),
		addUser("cert-only", nil),
	)...)
}

func TestEncodingRoundTrip(t *testing.T) {
	for _, s := range []*State{build(t), richState(t)} {
		enc := s.Encode()
		got, err := DecodeState(enc)
		if err != nil {
			t.Fatalf("decode %s: %v", enc, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip differs:\n%+v\n%+v", got, s)
		}
		if !bytes.Equal(got.Encode(), enc) {
			t.Errorf("re-encoding differs:\n%s\n%s", got.Encode(), enc)
		}
	}
}

// TestDecodeRefuses edits a valid encoding into each kind of bad state.
func TestDecodeRefuses(t *testing.T) {
	good := richState(t).Encode()
	edit := func(f func(w map[string]any)) []byte {
		var w map[string]any
		if err := json.Unmarshal(good, &w); err != nil {
			t.Fatal(err)
		}
		f(w)
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	users := func(w map[string]any) []any { return w["users"].([]any) }
	roles := func(w map[string]any) []any { return w["roles"].([]any) }
	field := func(v any, k string, x any) { v.(map[string]any)[k] = x }

	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"version 2", edit(func(w map[string]any) { w["version"] = 2 }), ErrUnsupportedVersion},
		{"version 0", edit(func(w map[string]any) { w["version"] = 0 }), ErrUnsupportedVersion},
		{"no version", edit(func(w map[string]any) { delete(w, "version") }), ErrUnsupportedVersion},
		{"not JSON", []byte("\x00\x01"), ErrCorrupt},
		{"empty", nil, ErrCorrupt},
		{"trailing data", append(bytes.Clone(good), "{}"...), ErrCorrupt},
		{"unknown field", edit(func(w map[string]any) { w["extra"] = 1 }), ErrCorrupt},
		{"short signing key", edit(func(w map[string]any) { w["signing_key"] = "AAAA" }), ErrCorrupt},
		{"zero bound", edit(func(w map[string]any) { w["revocation_bound_ns"] = 0 }), ErrCorrupt},
		{"users unsorted", edit(func(w map[string]any) { u := users(w); u[0], u[1] = u[1], u[0] }), ErrCorrupt},
		{"user twice", edit(func(w map[string]any) { u := users(w); w["users"] = append([]any{u[0]}, u...) }), ErrCorrupt},
		{"user bad name", edit(func(w map[string]any) { field(users(w)[0], "name", "a b") }), ErrCorrupt},
		{"user bad hash", edit(func(w map[string]any) { field(users(w)[0], "password_hash", "AAAA") }), ErrCorrupt},
		{"user unknown role", edit(func(w map[string]any) { field(users(w)[0], "roles", []string{"nope"}) }), ErrCorrupt},
		{"user roles unsorted", edit(func(w map[string]any) { field(users(w)[0], "roles", []string{"empty", "app"}) }), ErrCorrupt},
		{"user roles twice", edit(func(w map[string]any) { field(users(w)[0], "roles", []string{"app", "app"}) }), ErrCorrupt},
		{"generation from the future", edit(func(w map[string]any) { field(users(w)[0], "generation", 1e6) }), ErrCorrupt},
		{"enabled without root", edit(func(w map[string]any) { field(users(w)[2], "roles", []string{}) }), ErrCorrupt},
		{"no root role", edit(func(w map[string]any) { r := roles(w); w["roles"] = r[:len(r)-1] }), ErrCorrupt},
		{"roles unsorted", edit(func(w map[string]any) { r := roles(w); r[0], r[1] = r[1], r[0] }), ErrCorrupt},
		{"root role with permissions", edit(func(w map[string]any) {
			r := roles(w)
			field(r[len(r)-1], "permissions", r[0].(map[string]any)["permissions"])
		}), ErrCorrupt},
		{"invalid permission", edit(func(w map[string]any) {
			field(roles(w)[0], "permissions", []any{map[string]any{"access": 9, "match": 1, "key": "YQ=="}})
		}), ErrCorrupt},
		{"permissions unsorted", edit(func(w map[string]any) {
			p := roles(w)[0].(map[string]any)["permissions"].([]any)
			p[0], p[1] = p[1], p[0]
		}), ErrCorrupt},
	}
	for _, tt := range tests {
		_, err := DecodeState(tt.b)
		t.Log(tt.name, err)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// The edits above only break what they mean to: an identity edit
	// decodes.
	if _, err := DecodeState(edit(func(map[string]any) {})); err != nil {
		t.Fatalf("unedited: %v", err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(richState(f).Encode())
	f.Add(build(f).Encode())
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"users":[{"name":"a","roles":null}],"roles":null}`))
	f.Add([]byte(strings.Repeat("[", 100)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		// Whatever decodes is a state the package can use and store.
		enc := s.Encode()
		s2, err := DecodeState(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(s2.Encode(), enc) {
			t.Fatal("encoding not stable")
		}
		for _, u := range append(s.UserNames(), "ghost") {
			_ = s.Authorize(u, OpRead, []byte("k"))
			_ = s.AuthorizeRange(u, OpWrite, []byte("a"), nil)
		}
	})
}
