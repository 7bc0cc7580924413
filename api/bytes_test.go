package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestBytesJSON: valid UTF-8 is a JSON string, anything else
// {"base64": ...}; both decode back to the same bytes.
func TestBytesJSON(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", []byte{}, `""`},
		{"nil", nil, `""`},
		{"ascii", []byte("hello"), `"hello"`},
		{"slashes and dots", []byte("a/../b"), `"a/../b"`},
		{"utf-8", []byte("été ✓"), `"été ✓"`},
		{"quotes and escapes", []byte("a\"b\\c\n"), `"a\"b\\c\n"`},
		{"html characters", []byte("<&>"), `"\u003c\u0026\u003e"`},
		{"nul byte is valid utf-8", []byte{0}, `"\u0000"`},
		{"invalid utf-8", []byte{0xff}, `{"base64":"/w=="}`},
		{"binary", []byte{0xff, 0x00, 0x80, 0x01}, `{"base64":"/wCAAQ=="}`},
		{"truncated rune", []byte("é")[:1], `{"base64":"ww=="}`},
		{"surrogate half", []byte{0xed, 0xa0, 0x80}, `{"base64":"7aCA"}`},
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
			enc, err := json.Marshal(wrap{V: tc.in, P: &b})
			if err != nil {
				t.Fatal(err)
			}
			var w wrap
			if err := json.Unmarshal(enc, &w); err != nil {
				t.Fatalf("Unmarshal(%s): %v", enc, err)
			}
			if !bytes.Equal(w.V, tc.in) || w.P == nil || !bytes.Equal(*w.P, tc.in) {
				t.Errorf("struct round trip of %s: %q, %v", enc, w.V, w.P)
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
	// A JSON null for a *Bytes field leaves it nil: the CAS handler's way
	// of telling a missing "value" from an empty one.
	var body casBody
	if err := json.Unmarshal([]byte(`{"expected": null, "value": ""}`), &body); err != nil {
		t.Fatal(err)
	}
	if body.Expected != nil || body.Value == nil || len(*body.Value) != 0 {
		t.Errorf("casBody = %+v", body)
	}
}
