package caddymodule

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"
)

// localTokens answers a website that still calls the S-360 token endpoint
// itself before its API calls: it gets a well-formed HS256 JWT, signed with
// a key that lives only in this process. The token grants nothing: the
// sidecar never forwards the website's Authorization header and calls
// S-360 with the operator's own token. Its exp lets clients that read it
// renew on their usual schedule.
type localTokens struct {
	key         []byte
	institution string
	operator    string
	now         func() time.Time
}

const localTokenTTL = time.Hour

func newLocalTokens(institution, operator string) *localTokens {
	key := make([]byte, 32)
	rand.Read(key)
	return &localTokens{key: key, institution: institution, operator: operator, now: time.Now}
}

func (l *localTokens) issue() string {
	enc := base64.RawURLEncoding.EncodeToString
	now := l.now()
	claims, _ := json.Marshal(map[string]any{
		"sub": l.institution, "aud": l.operator, "iss": "s360edge",
		"iat": now.Unix(), "exp": now.Add(localTokenTTL).Unix(),
	})
	unsigned := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(claims)
	mac := hmac.New(sha256.New, l.key)
	mac.Write([]byte(unsigned))
	return unsigned + "." + enc(mac.Sum(nil))
}

func (h *Handler) serveLocalToken(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "the token endpoint takes POST"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(map[string]string{"token": h.localToken.issue()})
}
