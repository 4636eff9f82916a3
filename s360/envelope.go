package s360

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/tidwall/gjson"
)

// StatusCode returns the envelope's statusCode ("success", "in_progress",
// "error", ...), or "" when the body has none.
func StatusCode(body []byte) string {
	return gjson.GetBytes(body, "statusCode").String()
}

// Valid reports whether body is an S-360 answer at all: exactly one JSON
// object, nothing after it, with a string statusCode (docs/S360.md,
// "Answers"). A
// cut body, an HTML error page or an array is not, whatever text it holds.
func Valid(body []byte) bool {
	if !gjson.ValidBytes(body) {
		return false
	}
	// Not gjson.ParseBytes, which copies the body into a string: a
	// catalog's answer is 10 MB. GetBytes reads it in place.
	v := bytes.TrimLeft(body, " \t\r\n")
	return len(v) > 0 && v[0] == '{' && gjson.GetBytes(v, "statusCode").Type == gjson.String
}

// Success reports whether an answer may be stored: HTTP 200, a valid
// answer, and statusCode "success" (docs/S360.md, "Answers").
func Success(status int, body []byte) bool {
	return status == 200 && Valid(body) && StatusCode(body) == "success"
}

// ErrDuplicateKey is returned by CheckNoDuplicates.
var ErrDuplicateKey = errors.New("an object has the same key twice")

// CheckNoDuplicates walks a JSON value and fails when any object, at any
// depth, holds a key twice. Parsers disagree on which copy wins (gjson takes
// the first, a browser's JSON.parse the last), so such an answer cannot be
// trusted to mean one thing.
func CheckNoDuplicates(body []byte) error {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if k, ok := tok.(string); ok {
				if stack[n-1].keys[k] {
					return ErrDuplicateKey
				}
				stack[n-1].keys[k], stack[n-1].wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}
