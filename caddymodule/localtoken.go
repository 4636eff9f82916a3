package caddymodule

import (
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
// written for the sidecar holds no secret) gets a token too. The token is
// opaque random bytes and grants nothing: the sidecar never forwards the
// website's Authorization header and calls S-360 with its own token.
type localTokens struct {
	operator, secret [sha256.Size]byte
}

func newLocalTokens(operator, secret string) *localTokens {
	return &localTokens{operator: sha256.Sum256([]byte(operator)), secret: sha256.Sum256([]byte(secret))}
}

// match compares digests, so that neither the content nor the length of
// the configured values shows in the time taken.
func (l *localTokens) match(operator, secret string) bool {
	o, s := sha256.Sum256([]byte(operator)), sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(o[:], l.operator[:])&subtle.ConstantTimeCompare(s[:], l.secret[:]) == 1
}

func (l *localTokens) issue() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
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
