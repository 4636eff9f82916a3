package s360

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Key is the cache key of a call: institution, service, version and method,
// then the SHA-256 of the canonical body in hex. The key has a fixed size
// whatever the body (Badger refuses keys over 65,000 bytes, and request
// bodies may be up to max_body_size), and its readable prefix still says
// whose and which call it is. The version is kept because answers may
// differ between versions. The canonical body itself is kept in the entry
// and compared on read, so two bodies with the same hash never share an
// answer.
func Key(institution string, c Call, canonical []byte) string {
	sum := sha256.Sum256(canonical)
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	// One allocation: string(h[:]) within a concatenation is not copied first.
	return institution + "|" + c.Service + "/" + c.Version + "/" + c.Method + "|" + string(h[:])
}

// ParseKey splits a key built by Key back into its institution and call
// (classified by the built-in allow-list). The canonical body is not in
// the key: read it from the entry. Keys of the format before the hash
// (body in the key) are not ok.
func ParseKey(key string) (institution string, c Call, ok bool) {
	institution, rest, ok := strings.Cut(key, "|")
	if !ok {
		return "", Call{}, false
	}
	path, sum, ok := strings.Cut(rest, "|")
	if !ok || !isSHA256Hex(sum) {
		return "", Call{}, false
	}
	c, ok = Classifier{}.Classify(APIPrefix + path)
	return institution, c, ok
}

func isSHA256Hex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}
