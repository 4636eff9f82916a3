package oidcrp

import (
	"net/url"
	"path"
	"strings"

	"github.com/s360edge/s360edge/internal/field"
)

// Protect is a list of protected paths: exact paths, or prefixes ending in
// "*". Matching is deliberately generous: a request is protected when any
// reading a website might give its path matches, because the website (or a
// proxy in front of it) may clean "//", "/./" and "/x/../", decode %2F and
// %2E, decode twice, treat "\" as "/", drop ";params" from segments, or
// ignore case. Asking for a login too often is harmless; letting a
// protected page through without one is not.
type Protect struct {
	exact    []string
	prefixes []string
}

// maxPathDecodes bounds repeated percent-decoding (%252F → %2F → /).
const maxPathDecodes = 3

// NewProtect validates patterns: each must start with "/", and "*" may only
// end it.
func NewProtect(patterns []string) (Protect, error) {
	var p Protect
	for _, pat := range patterns {
		prefix, isPrefix := strings.CutSuffix(pat, "*")
		if !strings.HasPrefix(pat, "/") || strings.Contains(prefix, "*") {
			return Protect{}, field.Errorf("protect", "%q; write paths starting with /, or prefixes ending in *, e.g. protect /account /orders/*", pat)
		}
		prefix = strings.ToLower(prefix)
		if isPrefix {
			p.prefixes = append(p.prefixes, prefix)
		} else {
			p.exact = append(p.exact, cleanPath(prefix))
		}
	}
	return p, nil
}

// Empty reports whether nothing is protected.
func (p Protect) Empty() bool { return len(p.exact) == 0 && len(p.prefixes) == 0 }

// Match reports whether u's path, in any of its readings, is protected.
func (p Protect) Match(u *url.URL) bool {
	if p.Empty() {
		return false
	}
	for _, form := range pathForms(u) {
		for _, e := range p.exact {
			if form == e {
				return true
			}
		}
		for _, pre := range p.prefixes {
			// "/account/*" also covers "/account", which most websites
			// serve (or redirect) as the same page.
			if strings.HasPrefix(form, pre) || (len(pre) > 1 && strings.HasSuffix(pre, "/") && form == pre[:len(pre)-1]) {
				return true
			}
		}
	}
	return false
}

// pathForms lists the lower-cased readings of u's path: as received and
// cleaned; decoded once (Go's u.Path), and again up to maxPathDecodes; each
// also with backslashes as slashes and with ";params" removed.
func pathForms(u *url.URL) []string {
	decoded := []string{u.EscapedPath(), u.Path}
	s := u.Path
	for range maxPathDecodes {
		d, err := url.PathUnescape(s)
		if err != nil || d == s {
			break
		}
		decoded = append(decoded, d)
		s = d
	}
	var forms []string
	for _, d := range decoded {
		d = strings.ToLower(d)
		slashed := strings.ReplaceAll(d, `\`, "/")
		for _, f := range []string{d, slashed, stripParams(slashed)} {
			forms = append(forms, f, cleanPath(f))
		}
	}
	return forms
}

// cleanPath is path.Clean of p as a rooted path.
func cleanPath(p string) string {
	return path.Clean("/" + p)
}

// stripParams removes ";..." from every segment ("/a;x/../b;y" → "/a/../b"),
// as Java servlet containers do before routing.
func stripParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}
