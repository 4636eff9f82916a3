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
