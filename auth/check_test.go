package auth

import (
	"bytes"
	"errors"
	"testing"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ prefix, want []byte }{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte("a"), []byte("b")},
		{[]byte("app/"), []byte("app0")},
		{[]byte{'a', 0xff}, []byte("b")},
		{[]byte{0xff}, nil},
		{[]byte{0xff, 0xff}, nil},
		{[]byte{0x01, 0xff, 0xff}, []byte{0x02}},
		{[]byte{0xfe, 0xff}, []byte{0xff}},
	}
	for _, tt := range tests {
		p := bytes.Clone(tt.prefix)
		if got := PrefixEnd(p); !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
		if !bytes.Equal(p, tt.prefix) {
			t.Errorf("PrefixEnd modified its argument %q", tt.prefix)
		}
	}
}

func TestAuthorize(t *testing.T) {
	s := build(t, enabled(
		addRole("app"),
		grantPerm("app", prefixPerm(ReadWrite, "app/")),
		grantPerm("app", keyPerm(Read, "config")),
		grantPerm("app", rangePerm(Read, "m", "p")),
		addUser("alice", nil), grantRole("alice", "app"),

		addRole("high"),
		grantPerm("high", prefixPerm(Read, "\xff\xff")),
		grantPerm("high", prefixPerm(Write, "\xfe\xff")),
		addUser("hi", nil), grantRole("hi", "high"),

		addRole("everything-read"),
		grantPerm("everything-read", prefixPerm(Read, "")),
		addUser("eve", nil), grantRole("eve", "everything-read"),

		// Pieces that cover [a, f) only together, and [g, i) with a gap
		// at h.
		addRole("pieces"),
		grantPerm("pieces", rangePerm(Read, "a", "d")),
		grantPerm("pieces", rangePerm(Read, "b", "c")), // inside the first
		grantPerm("pieces", rangePerm(Read, "c", "e")),
		grantPerm("pieces", prefixPerm(Read, "e")),
		grantPerm("pieces", keyPerm(Read, "g")),
		grantPerm("pieces", rangePerm(Read, "h", "i")),
		addUser("carol", nil), grantRole("carol", "pieces"),
		// Two roles: their union counts.
		addRole("more"), grantPerm("more", rangePerm(Read, "g\x00", "h")),
		addUser("dave", nil), grantRole("dave", "pieces"), grantRole("dave", "more"),

		addUser("nobody", nil),
	)...)

	type c struct {
		user       string
		op         Op
		start, end string
		rng        bool // AuthorizeRange(start, end); else Authorize(start)
		allow      bool
	}
	key := func(user string, op Op, k string, allow bool) c { return c{user: user, op: op, start: k, allow: allow} }
	scan := func(user string, op Op, start, end string, allow bool) c {
		return c{user: user, op: op, start: start, end: end, rng: true, allow: allow}
	}
	tests := []c{
		// Prefix: the prefix itself is in, its neighbours are not.
		key("alice", OpRead, "app/", true),
		key("alice", OpWrite, "app/x", true),
		key("alice", OpWrite, "app/\xff\xff", true),
		key("alice", OpRead, "app", false),
		key("alice", OpRead, "app0", false),
		key("alice", OpRead, "apo", false),
		// Key: only that key.
		key("alice", OpRead, "config", true),
		key("alice", OpWrite, "config", false),
		key("alice", OpRead, "config\x00", false),
		key("alice", OpRead, "confi", false),
		// Range: start inclusive, end exclusive.
		key("alice", OpRead, "m", true),
		key("alice", OpRead, "o\xff\xff", true),
		key("alice", OpRead, "p", false),
		key("alice", OpRead, "l\xff", false),
		key("alice", OpWrite, "n", false),
		// Prefixes at 0xff bytes.
		key("hi", OpRead, "\xff\xff", true),
		key("hi", OpRead, "\xff\xff\xff\xff\xff", true),
		key("hi", OpRead, "\xff\xfe", false),
		key("hi", OpRead, "\xff", false),
		key("hi", OpWrite, "\xfe\xff\x00", true),
		key("hi", OpWrite, "\xff", false),
		// The empty prefix: every key, including the empty one.
		key("eve", OpRead, "", true),
		key("eve", OpRead, "\xff\xff\xff", true),
		key("eve", OpWrite, "x", false),
		// Root may do anything; users with no roles or no account nothing.
		key(RootUser, OpWrite, "anything", true),
		key("nobody", OpRead, "app/x", false),
		key("ghost", OpRead, "app/x", false),

		scan("alice", OpRead, "app/", "app0", true),
		scan("alice", OpRead, "app/", "app0\x00", false), // crosses the prefix's end
		scan("alice", OpRead, "app.", "app0", false),     // starts before it
		scan("alice", OpRead, "app/a", "", false),        // to the end of the key space
		scan("alice", OpRead, "m", "p", true),
		scan("alice", OpRead, "m", "p\x00", false),
		scan("alice", OpRead, "l", "n", false),
		scan("alice", OpRead, "config", "config\x00", true),
		scan("alice", OpRead, "config", "config\x00\x00", false),
		scan("alice", OpWrite, "m", "n", false),
		scan("alice", OpRead, "z", "a", true), // empty: touches nothing
		scan("alice", OpRead, "z", "z", true),
		scan("hi", OpRead, "\xff\xff", "", true),
		scan("hi", OpRead, "\xff\xfe", "", false),
		scan("eve", OpRead, "", "", true),
		scan("eve", OpRead, "k", "", true),
		scan("carol", OpRead, "a", "f", true), // [a,d) [b,c) [c,e) [e,f) together
		scan("carol", OpRead, "b", "e\xff", true),
		scan("carol", OpRead, "a", "f\x00", false),
		scan("carol", OpRead, "\x00", "b", false),
		scan("carol", OpRead, "g", "g\x00", true),
		scan("carol", OpRead, "g", "i", false), // gap [g\x00, h)
		scan("carol", OpRead, "h", "i", true),
		scan("dave", OpRead, "g", "i", true), // the second role fills the gap
		scan("dave", OpRead, "a", "i", false),
		scan(RootUser, OpWrite, "", "", true),
		scan("nobody", OpRead, "a", "b", false),
		scan("ghost", OpRead, "a", "b", false),
	}
	for _, tt := range tests {
		var err error
		if tt.rng {
			err = s.AuthorizeRange(tt.user, tt.op, []byte(tt.start), []byte(tt.end))
		} else {
			err = s.Authorize(tt.user, tt.op, []byte(tt.start))
		}
		if tt.allow && err != nil {
			t.Errorf("%+v: %v", tt, err)
		}
		if !tt.allow && !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("%+v: err = %v, want permission denied", tt, err)
		}
	}

	if err := s.Authorize("ghost", OpRead, []byte("k")); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("unknown user: %v, want it to say the user is unknown", err)
	}

	// Admin verbs: root only.
	for _, user := range []string{"alice", "eve", "nobody", "ghost"} {
		if err := s.AuthorizeAdmin(user, VerbSplit); !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("%s split: %v", user, err)
		}
	}
	if err := s.AuthorizeAdmin(RootUser, VerbMembership); err != nil {
		t.Errorf("root membership: %v", err)
	}

	// Disabled: everything is allowed to everyone.
	off, _, err := s.Disable()
	if err != nil {
		t.Fatal(err)
	}
	for _, check := range []error{
		off.Authorize("ghost", OpWrite, []byte("x")),
		off.AuthorizeRange("nobody", OpWrite, nil, nil),
		off.AuthorizeAdmin("alice", VerbBackup),
	} {
		if check != nil {
			t.Errorf("disabled: %v", check)
		}
	}
}
