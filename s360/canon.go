package s360

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNotObject is returned for a body that is valid JSON but not an object:
// every S-360 method takes an object.
var ErrNotObject = errors.New("body is not a JSON object")

// Canonical returns the canonical form of a JSON request body: object keys
// sorted at every depth, insignificant whitespace removed, and the top-level
// requestId dropped (S-360 only echoes it). Numbers keep their literal form,
// so 1 and 1.0 stay distinct, as they may for S-360. Strings are re-encoded,
// so equal strings written with different escapes are equal.
func Canonical(body []byte) ([]byte, error) {
	if out, err := canonicalFast(body); err == nil {
		return out, nil
	}
	return canonicalRef(body)
}

// canonicalRef is the reference: encoding/json's own decode and encode.
func canonicalRef(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decoding JSON body: %w", err)
	}
	if len(bytes.Trim(body[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, errors.New("decoding JSON body: trailing data after the JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, ErrNotObject
	}
	delete(obj, "requestId")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// encoding/json writes map keys sorted, which is the canonical order.
	if err := enc.Encode(obj); err != nil {
		return nil, fmt.Errorf("encoding canonical JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
