package caddymodule

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// localTokens answers a website that still calls the S-360 token endpoint
// itself before its API calls. Credentials it posts are checked against the
// sidecar's operator and secret, so a connection test with a wrong secret
// fails as it would against S-360; a body without credentials (a site
// written for the sidecar holds no secret) gets a token too. The token
// grants nothing: the sidecar never forwards the website's Authorization
// header and calls S-360 with its own token. It is 16 random bytes and
// their MAC under a key derived from the secret, so that the sidecar knows
// its own tokens when the website sends them back (issued), across reloads
// and restarts, without asking the buyers' identity provider.
type localTokens struct {
	operator, secret [sha256.Size]byte
	mac              [sha256.Size]byte // key of the tokens' MAC
}

func newLocalTokens(operator, secret string) *localTokens {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("s360edge local token"))
	l := &localTokens{operator: sha256.Sum256([]byte(operator)), secret: sha256.Sum256([]byte(secret))}
	copy(l.mac[:], m.Sum(nil))
	return l
}

const (
	tokenNonce = 16
	tokenMAC   = 16
)

func (l *localTokens) sum(nonce []byte) []byte {
	m := hmac.New(sha256.New, l.mac[:])
	m.Write(nonce)
	return m.Sum(nil)[:tokenMAC]
}

// match compares digests, so that neither the content nor the length of
// the configured values shows in the time taken.
func (l *localTokens) match(operator, secret string) bool {
	o, s := sha256.Sum256([]byte(operator)), sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(o[:], l.operator[:])&subtle.ConstantTimeCompare(s[:], l.secret[:]) == 1
}

func (l *localTokens) issue() string {
	b := make([]byte, tokenNonce, tokenNonce+tokenMAC)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(append(b, l.sum(b)...))
}

// issued tells whether token is one that issue made with this secret.
func (l *localTokens) issued(token string) bool {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != tokenNonce+tokenMAC {
		return false
	}
	return hmac.Equal(b[tokenNonce:], l.sum(b[:tokenNonce]))
}

const maxTokenRequest = 64 << 10

func (h *Handler) serveLocalToken(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "the token endpoint takes POST"})
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequest))
	if tooBig := new(http.MaxBytesError); errors.As(err, &tooBig) {
		return writeError(w, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the token request body is too large"})
	} else if err != nil {
		return writeError(w, &apiError{Status: http.StatusBadRequest, Code: "bad_body", Message: "the request body could not be read"})
	}
	var creds struct {
		Operator *string `json:"operator"`
		Secret   *string `json:"secret"`
	}
	if len(body) > 0 && json.Unmarshal(body, &creds) != nil {
		return writeError(w, &apiError{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the token request body must be a JSON object such as {\"operator\":…,\"secret\":…}, or empty"})
	}
	if creds.Operator != nil || creds.Secret != nil {
		var op, sec string
		if creds.Operator != nil {
			op = *creds.Operator
		}
		if creds.Secret != nil {
			sec = *creds.Secret
		}
		if !h.localToken.match(op, sec) {
			// What the S-360 token endpoint answers a wrong secret.
			return writeError(w, &apiError{Status: http.StatusUnauthorized, Code: "invalid_credentials", Message: "unknown operator or wrong secret"})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(map[string]string{"token": h.localToken.issue()})
}
