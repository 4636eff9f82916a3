package s360

import (
	"path"
	"strings"
)

// Class says how the sidecar treats a call.
type Class uint8

const (
	// Denied calls are not on the allow-list: the sidecar holds the
	// operator's credentials and must not open order history or contact
	// data to the website's visitors.
	Denied Class = iota
	// Catalog calls are cached until the setup generation changes.
	Catalog
	// Availability calls are cached for a short time, per product.
	Availability
	// Order calls pass through, never cached, coalesced or retried blindly.
	Order
	// Uncached calls are allowed but always go upstream (health checks,
	// change feeds, methods allowed by the operator).
	Uncached
)

var classNames = [...]string{"denied", "catalog", "availability", "order", "uncached"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Cacheable reports whether answers of the class are stored.
func (c Class) Cacheable() bool { return c == Catalog || c == Availability }

// APIPrefix is the path prefix of the S-360 REST-RPC web services.
const APIPrefix = "/tnseb/backend-apis/"

// Call is one parsed REST-RPC path.
type Call struct {
	Service string
	Version string
	Method  string
	Class   Class
}

// Name is "service/method", the form used by allow-lists, floors and metrics.
func (c Call) Name() string { return c.Service + "/" + c.Method }

// Path is the upstream path of the call.
func (c Call) Path() string {
	return APIPrefix + c.Service + "/" + c.Version + "/" + c.Method
}

// DefaultMethods returns the built-in allow-list, "service/method" → class.
func DefaultMethods() map[string]Class {
	m := make(map[string]Class, len(Methods))
	for k, v := range Methods {
		m[k] = v.Class
	}
	return m
}

// Classifier maps a path to a Call. The zero value uses the built-in
// allow-list only.
type Classifier struct {
	// Extra holds "service/method" patterns ("service/*" allowed) that the
	// operator allowed on top of the defaults; they pass through uncached.
	Extra []string
}

// Parse splits an S-360 REST-RPC path. ok is false when the path is not of
// the form /tnseb/backend-apis/<service>/<segment>/<method>. A version
// segment that is not of the form v<digits>_<digits> still parses, so that
// Classify can deny it with 403 rather than call it a missing path.
func Parse(p string) (Call, bool) {
	if !strings.HasPrefix(p, APIPrefix) || path.Clean(p) != p {
		return Call{}, false
	}
	parts := strings.Split(p[len(APIPrefix):], "/")
	if len(parts) != 3 || !validName(parts[0]) || !validName(parts[1]) || !validName(parts[2]) {
		return Call{}, false
	}
	return Call{Service: parts[0], Version: parts[1], Method: parts[2]}, true
}

// Classify parses p and sets the call's class. ok is false for paths that
// are not REST-RPC calls at all. A version other than v<digits>_<digits> is
// Denied whatever the allow-list says: S-360 has no such version, and what
// it would do with one is unknown.
func (cl Classifier) Classify(p string) (Call, bool) {
	c, ok := Parse(p)
	if !ok {
		return c, false
	}
	if ValidVersion(c.Version) {
		c.Class = cl.classOf(c.Service, c.Method)
	}
	return c, true
}

func (cl Classifier) classOf(service, method string) Class {
	if m, ok := Methods[service+"/"+method]; ok {
		return m.Class
	}
	for _, pat := range cl.Extra {
		if MatchName(pat, service, method) {
			return Uncached
		}
	}
	return Denied
}

// MatchName reports whether "service/method" matches pat, where pat is
// "service/method", "service/*" or "*".
func MatchName(pat, service, method string) bool {
	if pat == "*" {
		return true
	}
	s, m, ok := strings.Cut(pat, "/")
	return ok && s == service && (m == "*" || m == method)
}

// ValidPattern reports whether pat is usable with MatchName.
func ValidPattern(pat string) bool {
	if pat == "*" {
		return true
	}
	s, m, ok := strings.Cut(pat, "/")
	return ok && validName(s) && (m == "*" || validName(m))
}

func validName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// ValidVersion reports whether s is an S-360 version, v<digits>_<digits>
// such as v1_33.
func ValidVersion(s string) bool {
	major, minor, ok := strings.Cut(s, "_")
	if !ok || len(s) > 12 || len(major) < 2 || major[0] != 'v' {
		return false
	}
	return allDigits(major[1:]) && allDigits(minor)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
