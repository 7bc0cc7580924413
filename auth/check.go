package auth

import (
	"bytes"
	"fmt"
	"slices"
)

// Op is what a request does to the keys it names.
type Op uint8

// The operations a KV request performs.
const (
	OpRead  Op = 1
	OpWrite Op = 2
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

func (a Access) allows(o Op) bool {
	return (o == OpRead && a&Read != 0) || (o == OpWrite && a&Write != 0)
}

// Verb is an administrative action: only holders of the root role may
// perform one while auth is enabled.
type Verb string

// The admin verbs.
const (
	VerbMembership Verb = "membership"
	VerbSplit      Verb = "split"
	VerbStatus     Verb = "status"
	VerbBackup     Verb = "backup"
	VerbAuth       Verb = "auth"
)

// PrefixEnd returns the end of the range of keys starting with prefix: the
// smallest key greater than all of them, or nil (unbounded) when there is
// none, as for the empty prefix or one of only 0xff bytes.
func PrefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			end := bytes.Clone(prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}

// interval is the permission's keys as [start, end); a nil end is
// unbounded.
func (p Permission) interval() (start, end []byte) {
	switch p.Match {
	case MatchPrefix:
		return p.Key, PrefixEnd(p.Key)
	case MatchRange:
		return p.Key, p.End
	}
	// The smallest key after Key is Key followed by a zero byte.
	return p.Key, append(bytes.Clone(p.Key), 0)
}

type interval struct{ start, end []byte }

// grants lists the intervals on which user may perform op, and whether
// the user holds the root role (which allows everything).
func (s *State) grants(user string, op Op) (ivs []interval, root bool, err error) {
	u, ok := s.users[user]
	if !ok {
		return nil, false, fmt.Errorf("%w: user %q: %w", ErrPermissionDenied, user, ErrUserNotFound)
	}
	for _, name := range u.Roles {
		if name == RootRole {
			return nil, true, nil
		}
		for _, p := range s.roles[name].Permissions {
			if p.Access.allows(op) {
				start, end := p.interval()
				ivs = append(ivs, interval{start, end})
			}
		}
	}
	return ivs, false, nil
}

// Authorize decides whether user may perform op on key. With auth disabled
// everyone may do everything.
func (s *State) Authorize(user string, op Op, key []byte) error {
	// The keys in [key, key+"\x00") are key alone.
	end := append(bytes.Clone(key), 0)
	return s.authorize(user, op, key, end, func() string { return fmt.Sprintf("key %q", key) })
}

// AuthorizeRange decides whether user may perform op on every key in
// [start, end), an empty end meaning the end of the key space (as in
// ScanRequest). It is allowed only if the union of the user's permissions
// covers the whole range, so a scan crossing from a permitted range into
// one not permitted is denied, not truncated. An empty range (end <= start)
// touches no key and is allowed.
func (s *State) AuthorizeRange(user string, op Op, start, end []byte) error {
	if len(end) > 0 && bytes.Compare(end, start) <= 0 {
		return nil
	}
	if len(end) == 0 {
		end = nil
	}
	return s.authorize(user, op, start, end, func() string {
		if end == nil {
			return fmt.Sprintf("keys from %q to the end", start)
		}
		return fmt.Sprintf("range [%q, %q)", start, end)
	})
}

// authorize checks coverage of [start, end), nil end unbounded; what
// describes the keys for the error, built only on denial.
func (s *State) authorize(user string, op Op, start, end []byte, what func() string) error {
	if !s.enabled {
		return nil
	}
	ivs, root, err := s.grants(user, op)
	if err != nil || root {
		return err
	}
	if covered(ivs, start, end) {
		return nil
	}
	return fmt.Errorf("%w: user %q may not %s %s", ErrPermissionDenied, user, op, what())
}

// covered sweeps the intervals in order of start, extending the covered
// prefix of [start, end) until it reaches end or meets a gap.
func covered(ivs []interval, start, end []byte) bool {
	slices.SortFunc(ivs, func(a, b interval) int { return bytes.Compare(a.start, b.start) })
	cur := start
	for _, iv := range ivs {
		if bytes.Compare(iv.start, cur) > 0 {
			return false // a gap at cur; later intervals start later still
		}
		if iv.end == nil {
			return true
		}
		if bytes.Compare(iv.end, cur) > 0 {
			cur = iv.end
			if end != nil && bytes.Compare(cur, end) >= 0 {
				return true
			}
		}
	}
	return false
}

// AuthorizeAdmin decides whether user may perform an admin verb: only the
// root role may, while auth is enabled.
func (s *State) AuthorizeAdmin(user string, verb Verb) error {
	if !s.enabled {
		return nil
	}
	_, root, err := s.grants(user, OpWrite)
	if err != nil || root {
		return err
	}
	return fmt.Errorf("%w: user %q may not perform %s (needs the %s role)", ErrPermissionDenied, user, verb, RootRole)
}
