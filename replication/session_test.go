package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestParseSessionToken_ValidatesAndBounds: what a node accepts of a
// client's token, what it keeps, and that a token naming more ranges than
// the cluster could have is refused instead of echoed.
func TestParseSessionToken_ValidatesAndBounds(t *testing.T) {
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("%d:7", i+2)
		}
		return strings.Join(parts, ",")
	}
	tests := []struct {
		name  string
		token string
		known int // ranges the node knows of
		want  string
		err   bool
	}{
		{"empty", "", 3, "", false},
		{"one range", "2:1042", 3, "2:1042", false},
		{"several ranges, sorted on output", "7:88,2:1042", 3, "2:1042,7:88", false},
		{"a repeated range keeps its highest index", "2:5,2:9,2:7", 3, "2:9", false},
		{"the meta range is dropped", "1:500,2:9", 3, "2:9", false},
		{"index 0 is dropped", "2:0,3:4", 3, "3:4", false},
		{"a range this node cannot place is kept", "99999:3", 3, "99999:3", false},
		{"largest ids and indexes", "18446744073709551615:18446744073709551615", 3, "18446744073709551615:18446744073709551615", false},
		{"as many entries as allowed", many(3 + sessionSlack), 3, many(3 + sessionSlack), false},
		{"more entries than ranges could need", many(3 + sessionSlack + 1), 3, "", true},
		{"a big cluster allows more", many(3000), 2800, many(3000), false},
		{"a 218 KB token", strings.Repeat("123456:1,", 218<<10/9) + "2:1", 3, "", true},
		{"no colon", "2", 3, "", true},
		{"no index", "2:", 3, "", true},
		{"negative index", "2:-1", 3, "", true},
		{"index overflows", "2:18446744073709551616", 3, "", true},
		{"trailing comma", "2:1,", 3, "", true},
		{"spaces", "2: 1", 3, "", true},
		{"not numbers", "zz", 3, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked := false
			limit := func() int {
				asked = true
				return tc.known + sessionSlack
			}
			tok, err := parseSessionToken(tc.token, limit)
			if tc.err {
				if !errors.Is(err, ErrBadSessionToken) {
					t.Fatalf("parse: %v; want ErrBadSessionToken", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := tok.String(); got != tc.want {
				t.Errorf("token %q; want %q", got, tc.want)
			}
			if strings.Count(tc.token, ",") < sessionSlack && asked {
				t.Errorf("a token of %d entries asked for the node's ranges", strings.Count(tc.token, ",")+1)
			}
		})
	}
}

// TestSessionToken_WithAdvancesOneRange: the answer's token is the
// request's, advanced on the range that served it, never moved back.
func TestSessionToken_WithAdvancesOneRange(t *testing.T) {
	tok, err := parseSessionToken("2:10,5:3", func() int { return sessionSlack })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, index uint64
		want      string
	}{
		{2, 12, "2:12,5:3"},
		{2, 4, "2:10,5:3"},
		{9, 1, "2:10,5:3,9:1"},
	} {
		if got := tok.With(tc.id, tc.index).String(); got != tc.want {
			t.Errorf("with(%d, %d) = %q; want %q", tc.id, tc.index, got, tc.want)
		}
	}
	if got := tok.String(); got != "2:10,5:3" {
		t.Errorf("with changed the token it was called on: %q", got)
	}
}

// TestReadSpan_Overlaps: whether a read's keys meet a range's [start,
// end), an empty end being no bound.
func TestReadSpan_Overlaps(t *testing.T) {
	b := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	tests := []struct {
		span       readSpan
		start, end string
		want       bool
	}{
		{readSpan{start: b("m"), point: true}, "h", "", true},
		{readSpan{start: b("m"), point: true}, "h", "m", false},
		{readSpan{start: b("m"), point: true}, "m", "n", true},
		{readSpan{start: b("m"), point: true}, "", "h", false},
		{readSpan{start: b("a"), end: b("h")}, "h", "", false},
		{readSpan{start: b("a"), end: b("h")}, "g", "", true},
		{readSpan{start: b("a")}, "h", "", true},
		{readSpan{start: b("a")}, "", "a", false},
		{readSpan{start: b("h"), end: b("p")}, "a", "h", false},
		{readSpan{start: b("h"), end: b("p")}, "a", "i", true},
		{readSpan{start: b("h"), end: b("p")}, "p", "z", false},
	}
	for _, tc := range tests {
		if got := tc.span.overlaps(b(tc.start), b(tc.end)); got != tc.want {
			t.Errorf("%+v overlaps [%q, %q) = %v; want %v", tc.span, tc.start, tc.end, got, tc.want)
		}
	}
}
