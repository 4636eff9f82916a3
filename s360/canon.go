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

// Shape limits of a request body. No S-360 method takes anything near them;
// a body beyond them is an attack on the parser or the cache, and is refused
// before it costs an upstream call.
const (
	MaxDepth     = 32   // nested objects and arrays, the body itself included
	MaxDigits    = 32   // digits in one number literal, fraction and exponent included
	MaxContainer = 1000 // members of one object (duplicates included) or items of one array
)

// ErrShape is wrapped by the errors of bodies beyond the shape limits.
var ErrShape = errors.New("the body is beyond the accepted shape")

func shapeError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrShape}, args...)...)
}

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

// Check refuses what Canonical refuses, with the same errors, without
// building the canonical form: for a body passed on as it is (orders).
func Check(body []byte) error {
	_, err := decodeObject(body)
	return err
}

// canonicalRef is the reference: encoding/json's own decode and encode.
func canonicalRef(body []byte) ([]byte, error) {
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
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

// decodeObject decodes a request body, which must be one JSON object
// within the shape limits.
func decodeObject(body []byte) (map[string]any, error) {
	if err := checkShape(body); err != nil {
		return nil, err
	}
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
	return obj, nil
}

// checkShape enforces the shape limits with json.Decoder's tokens, which see
// every member, duplicates included, and every number as written. Syntax
// errors are left to the decoder that follows.
func checkShape(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// counts[i] is the number of tokens seen in the i-th open container;
	// in an object a key and its value are two tokens.
	var counts []int
	var objects []bool
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			if len(counts) == 0 { // Token reports unbalanced input; never panic on it
				return nil
			}
			counts, objects = counts[:len(counts)-1], objects[:len(objects)-1]
			continue
		}
		if top := len(counts) - 1; top >= 0 {
			counts[top]++
			if objects[top] && (counts[top]+1)/2 > MaxContainer {
				return shapeError("an object has more than %d members", MaxContainer)
			}
			if !objects[top] && counts[top] > MaxContainer {
				return shapeError("an array has more than %d items", MaxContainer)
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			if len(counts) >= MaxDepth {
				return shapeError("objects and arrays are nested deeper than %d levels", MaxDepth)
			}
			counts, objects = append(counts, 0), append(objects, t == '{')
		case json.Number:
			if numberDigits(string(t)) > MaxDigits {
				return shapeError("a number has more than %d digits", MaxDigits)
			}
		}
	}
}

func numberDigits[T string | []byte](s T) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
}
