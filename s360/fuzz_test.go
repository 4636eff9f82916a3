package s360

import (
	"bytes"
	"encoding/json"
	"reflect"
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

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"b":[1,{"c":"d"}],"a":null,"requestId":3}`, `{"x":"\u00e9\n","y":1e10}`, `[1]`, `{"a":1}{}`} {
		f.Add([]byte(s), []byte(`{"a":1}`))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ca, errA := Canonical(a)
		va, okA := decodeRef(a)
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
		if errB != nil {
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
		`{"s":"\u00e9\u2028<&>","\u0061":1}`, "{\"k\":\"\xff\"}", `{"n":01}`, `{"a":[1,]}`, ` {"a" : "b" } `, `{"request\u0049d":5}`} {
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
			t.Fatalf("fast path accepted %q, reference says %v", b, refErr)
		}
		if !bytes.Equal(fast, ref) {
			t.Fatalf("%q: fast %q, reference %q", b, fast, ref)
		}
	})
}
