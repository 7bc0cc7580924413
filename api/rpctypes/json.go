package rpctypes

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Bytes is how the HTTP API writes keys and values in JSON: a string when
// valid UTF-8, else {"base64": "..."}. It lives here, not in the server's
// package, so that kvctl prints keys exactly as the HTTP API answers them
// without linking the server.
type Bytes []byte

// MarshalJSON leaves <, > and & unescaped: encoding/json escapes a
// marshaler's output again unless its encoder was told not to, so the HTTP
// API's answers keep \u003c while kvctl, whose encoder is told not to,
// prints keys as typed.
func (b Bytes) MarshalJSON() ([]byte, error) {
	var v any = string(b)
	if !utf8.Valid(b) {
		v = map[string]string{"base64": base64.StdEncoding.EncodeToString(b)}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON takes both forms MarshalJSON writes, so that a client can
// decode an answer into the server's own types.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*b = Bytes(s)
		return nil
	}
	var obj struct {
		Base64 *string `json:"base64"`
	}
	if err := json.Unmarshal(data, &obj); err != nil || obj.Base64 == nil {
		return errors.New(`want a string or {"base64": "..."}`)
	}
	raw, err := base64.StdEncoding.DecodeString(*obj.Base64)
	if err != nil {
		return fmt.Errorf("base64: %w", err)
	}
	*b = raw
	return nil
}

// KVJSON is one key of a scan's JSON answer, GET /v1/scan's or a
// transaction's.
type KVJSON struct {
	Key      Bytes  `json:"key"`
	Value    Bytes  `json:"value"`
	Revision uint64 `json:"revision"`
}
