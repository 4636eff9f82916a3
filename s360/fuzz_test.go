package s360

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// decodeRef is the reference: encoding/json's own notion of equal values,
// with numbers kept literal and the top-level requestId dropped.
func decodeRef(b []byte) (any, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	delete(m, "requestId")
	return m, true
}

// beyondLimits walks a decoded body with its own notion of the shape
// limits. Duplicate keys are gone after decoding, so it may see fewer
// members than the body had.
func beyondLimits(v any, depth int) bool {
	switch v := v.(type) {
	case map[string]any:
		if depth > MaxDepth || len(v) > MaxContainer {
			return true
		}
		for _, e := range v {
			if beyondLimits(e, depth+1) {
				return true
			}
		}
	case []any:
		if depth > MaxDepth || len(v) > MaxContainer {
			return true
		}
		for _, e := range v {
			if beyondLimits(e, depth+1) {
				return true
			}
		}
	case json.Number:
		return strings.Count(strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return 'd'
			}
			return -1
		}, string(v)), "d") > MaxDigits
	}
	return false
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"b":[1,{"c":"d"}],"a":null,"requestId":3}`, `{"x":"\u00e9\n","y":1e10}`, `[1]`, `{"a":1}{}`,
		`{"n":123456789012345678901234567890123}`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`, `{"a":1,"a":2}`} {
		f.Add([]byte(s), []byte(`{"a":1}`))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ca, errA := Canonical(a)
		va, okA := decodeRef(a)
		if errC := Check(a); fmt.Sprint(errC) != fmt.Sprint(errA) {
			t.Fatalf("Check(%q) = %v, Canonical's error %v", a, errC, errA)
		}
		if errors.Is(errA, ErrShape) {
			// Refused for its shape: it must be beyond a limit, unless
			// decoding hid duplicate keys that counted as members.
			if okA && !beyondLimits(va, 1) && bytes.Count(a, []byte(":")) <= MaxContainer {
				t.Fatalf("Canonical(%q) refused the shape of a body within the limits: %v", a, errA)
			}
			return
		}
		if errA == nil && beyondLimits(va, 1) {
			t.Fatalf("Canonical(%q) accepted a body beyond the shape limits", a)
		}
		if (errA == nil) != okA {
			t.Fatalf("Canonical(%q) err=%v but reference ok=%v", a, errA, okA)
		}
		if errA != nil {
			return
		}
		// Idempotent, and the canonical form decodes to the same value.
		if again, err := Canonical(ca); err != nil || !bytes.Equal(again, ca) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", a, ca, again, err)
		}
		if vc, _ := decodeRef(ca); !reflect.DeepEqual(va, vc) {
			t.Fatalf("canonical form changes the value: %q -> %q", a, ca)
		}
		cb, errB := Canonical(b)
		vb, _ := decodeRef(b)
		if errB != nil || beyondLimits(vb, 1) {
			return
		}
		if bytes.Equal(ca, cb) != reflect.DeepEqual(va, vb) {
			t.Fatalf("equality differs from reference: %q vs %q -> %q vs %q", a, b, ca, cb)
		}
	})
}

// FuzzCanonicalFast checks that the scanner never disagrees with the
// encoding/json reference it stands in for.
func FuzzCanonicalFast(f *testing.F) {
	for _, s := range []string{`{}`, `{"b":1,"a":[true,false,null,-0.5e+3]}`, `{"a":1,"a":2}`, `{"requestId":1,"x":{"requestId":2}}`,
		`{"s":"\u00e9\u2028<&>","\u0061":1}`, "{\"k\":\"\xff\"}", `{"n":01}`, `{"a":[1,]}`, ` {"a" : "b" } `, `{"request\u0049d":5}`,
		`{"n":1.2345678901234567890123456789e-123}`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, err := canonicalFast(b)
		ref, refErr := canonicalRef(b)
		if err != nil {
			if err != errFallback {
				t.Fatalf("fast path error %v", err)
			}
			return
		}
		if refErr != nil {
			// This also holds the fast path to the shape limits, which
			// the reference enforces.
			t.Fatalf("fast path accepted %q, reference says %v", b, refErr)
		}
		if !bytes.Equal(fast, ref) {
			t.Fatalf("%q: fast %q, reference %q", b, fast, ref)
		}
	})
}
