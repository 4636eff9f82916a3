package oidcrp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/s360edge/s360edge/internal/field"
)

// Cookie values are base64url(version || nonce || AES-256-GCM(expiry || payload)).
// The expiry lives inside the ciphertext so that a client cannot extend a
// cookie by editing its Max-Age, and the cookie name plus version are the
// additional authenticated data so that a value sealed for one cookie (the
// login state) is never accepted as another (the session).
const (
	cookieVersion = 1
	// maxCookieValue keeps name=value well under the 4096 bytes browsers
	// guarantee, with room for the cookie name.
	maxCookieValue = 3900
)

var (
	errCookieInvalid = errors.New("cookie invalid")
	errCookieExpired = errors.New("cookie expired")
)

// cookieCodec seals and opens the values of one cookie name.
type cookieCodec struct {
	name string
	aead cipher.AEAD
}

// minSecretLen is the smallest accepted cookie secret, in bytes after decoding.
const minSecretLen = 32

// decodeSecret accepts a base64 encoding of >= 32 random bytes (what
// `openssl rand -base64 32` gives) or, failing that, a raw string of >= 32
// characters.
func decodeSecret(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) >= minSecretLen {
			return b, nil
		}
	}
	if len(s) >= minSecretLen {
		return []byte(s), nil
	}
	problem := "too short"
	if s == "" {
		problem = "missing"
	}
	return nil, field.Errorf("cookie_secret", "%s; set it to at least %d random characters, or base64 of %d random bytes (openssl rand -base64 %d)", problem, minSecretLen, minSecretLen, minSecretLen)
}

// newCookieCodec derives a key for this cookie name from the secret with
// HKDF-SHA256, so the session and state cookies never share a key.
func newCookieCodec(secret []byte, name string) (*cookieCodec, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, "s360edge oidcrp cookie v1 "+name, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving cookie key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("creating cookie cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating cookie cipher: %w", err)
	}
	return &cookieCodec{name: name, aead: aead}, nil
}

func (c *cookieCodec) aad() []byte {
	return append([]byte{cookieVersion}, c.name...)
}

// encode seals payload, valid until expiry.
func (c *cookieCodec) encode(payload []byte, expiry time.Time) (string, error) {
	ns := c.aead.NonceSize()
	buf := make([]byte, 1+ns, 1+ns+8+len(payload)+c.aead.Overhead())
	buf[0] = cookieVersion
	if _, err := rand.Read(buf[1 : 1+ns]); err != nil {
		return "", fmt.Errorf("generating cookie nonce: %w", err)
	}
	plain := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(payload)), uint64(expiry.Unix()))
	plain = append(plain, payload...)
	out := c.aead.Seal(buf, buf[1:1+ns], plain, c.aad())
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// decode opens a value sealed by encode, rejecting anything tampered,
// sealed with another key or for another cookie, or expired at now.
func (c *cookieCodec) decode(value string, now time.Time) ([]byte, error) {
	if len(value) > maxCookieValue*2 {
		return nil, errCookieInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return nil, errCookieInvalid
	}
	ns := c.aead.NonceSize()
	if len(raw) < 1+ns+c.aead.Overhead()+8 || raw[0] != cookieVersion {
		return nil, errCookieInvalid
	}
	plain, err := c.aead.Open(nil, raw[1:1+ns], raw[1+ns:], c.aad())
	if err != nil || len(plain) < 8 {
		return nil, errCookieInvalid
	}
	exp := int64(binary.BigEndian.Uint64(plain[:8]))
	if now.Unix() >= exp {
		return nil, errCookieExpired
	}
	return plain[8:], nil
}

// Sealer seals short-lived values for another login method's own cookie
// (SAML's login state), with a key derived from the RP's secret and name.
type Sealer struct {
	c *cookieCodec
}

// Sealer returns a Sealer for the cookie called name; name must differ from
// the RP's own cookie names.
func (rp *RP) Sealer(name string) (*Sealer, error) {
	c, err := newCookieCodec(rp.secret, name)
	if err != nil {
		return nil, err
	}
	return &Sealer{c: c}, nil
}

// Seal encrypts and authenticates payload, valid until expiry.
func (s *Sealer) Seal(payload []byte, expiry time.Time) (string, error) {
	return s.c.encode(payload, expiry)
}

// Open returns the payload of a value Seal made, or an error when it was
// tampered with, made for another cookie or has expired.
func (s *Sealer) Open(value string) ([]byte, error) { return s.c.decode(value, time.Now()) }
