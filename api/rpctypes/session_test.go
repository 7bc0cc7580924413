package rpctypes

import "testing"

// TestParseSessionToken_FormatRoundTrips: the token's syntax, what parsing
// keeps, and the text it formats back to.
func TestParseSessionToken_FormatRoundTrips(t *testing.T) {
	tests := []struct {
		name, token, want string
		err               bool
	}{
		{"empty", "", "", false},
		{"one range", "2:1042", "2:1042", false},
		{"ranges in numeric order, not text order", "10:5,2:1042,7:88", "2:1042,7:88,10:5", false},
		{"a repeated range keeps its highest index", "2:5,2:9,2:7", "2:9", false},
		{"index 0 asks for nothing", "2:0,3:4", "3:4", false},
		{"leading zeros name the same range", "02:3,2:5", "2:5", false},
		{"the meta range is kept (the server decides)", "1:500,2:9", "1:500,2:9", false},
		{"largest ids and indexes", "18446744073709551615:18446744073709551615", "18446744073709551615:18446744073709551615", false},
		{"no colon", "2", "", true},
		{"no index", "2:", "", true},
		{"no range", ":3", "", true},
		{"negative index", "2:-1", "", true},
		{"plus sign", "+2:1", "", true},
		{"index overflows", "2:18446744073709551616", "", true},
		{"trailing comma", "2:1,", "", true},
		{"spaces", "2: 1", "", true},
		{"two colons", "2:1:3", "", true},
		{"not numbers", "zz", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseSessionToken(tc.token)
			if tc.err {
				if err == nil {
					t.Fatalf("ParseSessionToken(%q) = %v, want an error", tc.token, tok)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSessionToken(%q): %v", tc.token, err)
			}
			if got := tok.String(); got != tc.want {
				t.Errorf("ParseSessionToken(%q).String() = %q, want %q", tc.token, got, tc.want)
			}
		})
	}
}

// TestMergeSessionTokens_KeepsEachRangesHighestIndex: a client carrying
// its session forward never moves a range back, and keeps ranges only one
// side names.
func TestMergeSessionTokens_KeepsEachRangesHighestIndex(t *testing.T) {
	tests := []struct {
		name, a, b, want string
		err              bool
	}{
		{"both empty", "", "", "", false},
		{"first answer", "", "2:10", "2:10", false},
		{"advances", "2:10", "2:12", "2:12", false},
		{"never moves back", "2:12", "2:10", "2:12", false},
		{"ranges of both", "2:10,9:1", "3:4,9:7", "2:10,3:4,9:7", false},
		{"range 10 after range 2", "10:1", "2:1", "2:1,10:1", false},
		{"a bad answer is an error, not skipped", "2:10", "2:x", "", true},
		{"a bad session is an error", "2", "3:1", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MergeSessionTokens(tc.a, tc.b)
			if tc.err {
				if err == nil {
					t.Fatalf("MergeSessionTokens(%q, %q) = %q, want an error", tc.a, tc.b, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("MergeSessionTokens(%q, %q) = %q, %v; want %q", tc.a, tc.b, got, err, tc.want)
			}
		})
	}
}

// TestSessionToken_WithAndMergeLeaveTheirInputs: a token handed out stays
// as it was when the next answer's token is derived from it.
func TestSessionToken_WithAndMergeLeaveTheirInputs(t *testing.T) {
	tok := SessionToken{2: 10, 5: 3}
	for _, tc := range []struct {
		name string
		got  SessionToken
		want string
	}{
		{"with advances", tok.With(5, 8), "2:10,5:8"},
		{"with never moves back", tok.With(2, 4), "2:10,5:3"},
		{"with adds a range", tok.With(7, 1), "2:10,5:3,7:1"},
		{"merge", tok.Merge(SessionToken{5: 9, 6: 1}), "2:10,5:9,6:1"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, s, tc.want)
		}
	}
	if s := tok.String(); s != "2:10,5:3" {
		t.Errorf("the original token changed to %q", s)
	}
}
