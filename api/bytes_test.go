package api

import (
	"encoding/json"
	"testing"
)

// TestCASBodyNull: a JSON null for a *Bytes field leaves it nil, the CAS
// handler's way of telling a missing "value" from an empty one. Bytes'
// own encoding is tested in api/rpctypes.
func TestCASBodyNull(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		wantExpected []byte // nil: the field must stay nil
		wantValue    []byte
	}{
		{"null expected, empty value", `{"expected": null, "value": ""}`, nil, []byte{}},
		{"missing expected, base64 value", `{"value": {"base64": "AAE="}}`, nil, []byte{0, 1}},
		{"empty expected, missing value", `{"expected": ""}`, []byte{}, nil},
		{"both set", `{"expected": "a", "value": "b"}`, []byte("a"), []byte("b")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body casBody
			if err := json.Unmarshal([]byte(tc.body), &body); err != nil {
				t.Fatal(err)
			}
			check := func(field string, got *Bytes, want []byte) {
				t.Helper()
				switch {
				case want == nil && got != nil:
					t.Errorf("%s = %q; want nil", field, *got)
				case want != nil && got == nil:
					t.Errorf("%s = nil; want %q", field, want)
				case want != nil && string(*got) != string(want):
					t.Errorf("%s = %q; want %q", field, *got, want)
				}
			}
			check("Expected", body.Expected, tc.wantExpected)
			check("Value", body.Value, tc.wantValue)
		})
	}
}
