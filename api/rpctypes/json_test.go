package rpctypes

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestBytesJSON: valid UTF-8 is a JSON string, anything else
// {"base64": ...}; both decode back to the same bytes. The HTTP API's
// encoder escapes HTML characters, kvctl's does not, and both rely on Bytes
// to follow their encoder.
func TestBytesJSON(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
		// unescaped is the output of an encoder without HTML escaping,
		// kvctl's, when it differs from want.
		unescaped string
	}{
		{"empty", []byte{}, `""`, ""},
		{"nil", nil, `""`, ""},
		{"ascii", []byte("hello"), `"hello"`, ""},
		{"slashes and dots", []byte("a/../b"), `"a/../b"`, ""},
		{"utf-8", []byte("été ✓"), `"été ✓"`, ""},
		{"quotes and escapes", []byte("a\"b\\c\n"), `"a\"b\\c\n"`, ""},
		{"html characters", []byte("<&>"), `"\u003c\u0026\u003e"`, `"<&>"`},
		{"line separator", []byte("a\u2028b"), `"a\u2028b"`, ""},
		{"nul byte is valid utf-8", []byte{0}, `"\u0000"`, ""},
		{"invalid utf-8", []byte{0xff}, `{"base64":"/w=="}`, ""},
		{"binary", []byte{0xff, 0x00, 0x80, 0x01}, `{"base64":"/wCAAQ=="}`, ""},
		{"binary with html characters", []byte("<\xff>"), `{"base64":"PP8+"}`, ""},
		{"truncated rune", []byte("é")[:1], `{"base64":"ww=="}`, ""},
		{"surrogate half", []byte{0xed, 0xa0, 0x80}, `{"base64":"7aCA"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(Bytes(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("Marshal = %s; want %s", got, tc.want)
			}
			unescaped := tc.unescaped
			if unescaped == "" {
				unescaped = tc.want
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(Bytes(tc.in)); err != nil {
				t.Fatal(err)
			}
			if got := bytes.TrimSuffix(buf.Bytes(), []byte("\n")); string(got) != unescaped {
				t.Errorf("Encode without HTML escaping = %s; want %s", got, unescaped)
			}
			var back Bytes
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatalf("Unmarshal(%s): %v", got, err)
			}
			if !bytes.Equal(back, tc.in) {
				t.Errorf("round trip: %q; want %q", back, tc.in)
			}
			// Inside a struct, as the HTTP bodies use it.
			type wrap struct {
				V Bytes  `json:"v"`
				P *Bytes `json:"p"`
			}
			b := Bytes(tc.in)
			encoded, err := json.Marshal(wrap{V: tc.in, P: &b})
			if err != nil {
				t.Fatal(err)
			}
			var w wrap
			if err := json.Unmarshal(encoded, &w); err != nil {
				t.Fatalf("Unmarshal(%s): %v", encoded, err)
			}
			if !bytes.Equal(w.V, tc.in) || w.P == nil || !bytes.Equal(*w.P, tc.in) {
				t.Errorf("struct round trip of %s: %q, %v", encoded, w.V, w.P)
			}
		})
	}
}

func TestBytesUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{`"abc"`, []byte("abc"), false},
		{`""`, []byte{}, false},
		{`"\u00e9"`, []byte("é"), false},
		{`{"base64": "AAE="}`, []byte{0, 1}, false},
		{`{"base64": ""}`, []byte{}, false},
		{`{"base64": "aGk="}`, []byte("hi"), false},
		{`{"base64": "!!"}`, nil, true},
		{`{"base64": "AAE"}`, nil, true}, // standard encoding needs padding
		{`{"base64": null}`, nil, true},
		{`{"base64": 5}`, nil, true},
		{`{}`, nil, true},
		{`{"b64": "AAE="}`, nil, true},
		{`5`, nil, true},
		{`true`, nil, true},
		{`["a"]`, nil, true},
	}
	for _, tc := range tests {
		var b Bytes
		err := b.UnmarshalJSON([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("UnmarshalJSON(%s) error %v; want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !bytes.Equal(b, tc.want) {
			t.Errorf("UnmarshalJSON(%s) = %q; want %q", tc.in, b, tc.want)
		}
	}
}
