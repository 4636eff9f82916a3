package s360

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"unicode/utf8"
)

// canonicalFast produces exactly what Canonical's decode/encode does, with
// a hand-written scanner instead of reflection: a cache hit spends most of
// its CPU here when bodies vary (e.g. a new requestId each time). Anything
// unusual (escapes, control characters, invalid UTF-8) in a string goes
// through encoding/json so the two always agree; FuzzCanonicalFast checks it.
// A body beyond the shape limits falls back too: the reference refuses it
// with the error that says which limit.
func canonicalFast(body []byte) ([]byte, error) {
	p := &scanner{in: body}
	p.space()
	if p.i >= len(p.in) || p.in[p.i] != '{' {
		return nil, errFallback
	}
	out := make([]byte, 0, len(body))
	out, err := p.value(out, true)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.in) {
		return nil, errFallback
	}
	return out, nil
}

// errFallback sends the body to the reference implementation, which also
// produces the right error message for invalid JSON.
var errFallback = errors.New("fallback")

type scanner struct {
	in    []byte
	i     int
	depth int
}

func (p *scanner) space() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

type member struct {
	key []byte // canonical encoding, quotes included
	raw string // decoded key, for ordering as encoding/json does
	val []byte
}

func (p *scanner) value(out []byte, top bool) ([]byte, error) {
	p.space()
	if p.i >= len(p.in) {
		return nil, errFallback
	}
	switch c := p.in[p.i]; {
	case c == '{':
		return p.object(out, top)
	case c == '[':
		return p.array(out)
	case c == '"':
		s, _, err := p.str()
		if err != nil {
			return nil, err
		}
		return append(out, s...), nil
	case c == 't':
		return p.literal(out, "true")
	case c == 'f':
		return p.literal(out, "false")
	case c == 'n':
		return p.literal(out, "null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number(out)
	}
	return nil, errFallback
}

func (p *scanner) object(out []byte, top bool) ([]byte, error) {
	if p.depth++; p.depth > MaxDepth {
		return nil, errFallback
	}
	defer func() { p.depth-- }()
	p.i++ // {
	var ms []member
	p.space()
	if p.i < len(p.in) && p.in[p.i] == '}' {
		p.i++
	} else {
		for {
			p.space()
			key, raw, err := p.str()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.i >= len(p.in) || p.in[p.i] != ':' {
				return nil, errFallback
			}
			p.i++
			val, err := p.value(nil, false)
			if err != nil {
				return nil, err
			}
			if ms = append(ms, member{key: key, raw: raw, val: val}); len(ms) > MaxContainer {
				return nil, errFallback
			}
			p.space()
			if p.i >= len(p.in) {
				return nil, errFallback
			}
			if p.in[p.i] == ',' {
				p.i++
				continue
			}
			if p.in[p.i] == '}' {
				p.i++
				break
			}
			return nil, errFallback
		}
	}
	// Last duplicate wins, as in a decode into a map; keys sorted by
	// their decoded strings, as encoding/json sorts map keys.
	slices.SortStableFunc(ms, func(a, b member) int { return compareStrings(a.raw, b.raw) })
	out = append(out, '{')
	first := true
	for i, m := range ms {
		if i+1 < len(ms) && ms[i+1].raw == m.raw {
			continue
		}
		if top && m.raw == "requestId" {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, m.key...)
		out = append(out, ':')
		out = append(out, m.val...)
	}
	return append(out, '}'), nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (p *scanner) array(out []byte) ([]byte, error) {
	if p.depth++; p.depth > MaxDepth {
		return nil, errFallback
	}
	defer func() { p.depth-- }()
	p.i++ // [
	out = append(out, '[')
	p.space()
	if p.i < len(p.in) && p.in[p.i] == ']' {
		p.i++
		return append(out, ']'), nil
	}
	for n := 0; ; n++ {
		if n == MaxContainer {
			return nil, errFallback
		}
		if n > 0 {
			out = append(out, ',')
		}
		var err error
		if out, err = p.value(out, false); err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.in) {
			return nil, errFallback
		}
		switch p.in[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return append(out, ']'), nil
		default:
			return nil, errFallback
		}
	}
}

// str scans a string and returns its canonical encoding and its decoded
// value. Plain strings are copied; others go through encoding/json.
func (p *scanner) str() ([]byte, string, error) {
	if p.i >= len(p.in) || p.in[p.i] != '"' {
		return nil, "", errFallback
	}
	start := p.i
	plain := true
	for j := start + 1; j < len(p.in); {
		c := p.in[j]
		switch {
		case c == '"':
			p.i = j + 1
			lit := p.in[start:p.i]
			if plain {
				return lit, string(lit[1 : len(lit)-1]), nil
			}
			var s string
			if json.Unmarshal(lit, &s) != nil {
				return nil, "", errFallback
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.Encode(s)
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), s, nil
		case c == '\\':
			plain = false
			j += 2
		case c < 0x20:
			return nil, "", errFallback
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(p.in[j:])
			if r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				plain = false
			}
			j += size
		}
	}
	return nil, "", errFallback
}

func (p *scanner) literal(out []byte, lit string) ([]byte, error) {
	if !bytes.HasPrefix(p.in[p.i:], []byte(lit)) {
		return nil, errFallback
	}
	p.i += len(lit)
	return append(out, lit...), nil
}

// number copies a JSON number literal after checking its grammar.
func (p *scanner) number(out []byte) ([]byte, error) {
	start, in, j := p.i, p.in, p.i
	digits := func() int {
		k := j
		for j < len(in) && in[j] >= '0' && in[j] <= '9' {
			j++
		}
		return j - k
	}
	if j < len(in) && in[j] == '-' {
		j++
	}
	if j < len(in) && in[j] == '0' {
		j++
	} else if digits() == 0 {
		return nil, errFallback
	}
	if j < len(in) && in[j] == '.' {
		j++
		if digits() == 0 {
			return nil, errFallback
		}
	}
	if j < len(in) && (in[j] == 'e' || in[j] == 'E') {
		j++
		if j < len(in) && (in[j] == '+' || in[j] == '-') {
			j++
		}
		if digits() == 0 {
			return nil, errFallback
		}
	}
	if numberDigits(in[start:j]) > MaxDigits {
		return nil, errFallback
	}
	p.i = j
	return append(out, in[start:j]...), nil
}
