package sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var b64 = base64.RawURLEncoding

const jwtHeader = `{"alg":"HS256","typ":"JWT"}`

type claims struct {
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Iss string `json:"iss"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
	Jti string `json:"jti"`
}

// auth answers the token endpoint (docs/S360.md, "Authentication"). Any
// partner is accepted;
// operator and secret must match.
func (s *Server) auth(w http.ResponseWriter, r *http.Request, obj map[string]json.RawMessage) {
	var operator, partner, secret string
	_ = json.Unmarshal(obj["operator"], &operator)
	_ = json.Unmarshal(obj["partner"], &partner)
	_ = json.Unmarshal(obj["secret"], &secret)
	if subtle.ConstantTimeCompare([]byte(operator), []byte(s.cfg.Operator)) != 1 ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.Secret)) != 1 {
		writeError(w, r, http.StatusUnauthorized, "invalid_credentials", "unknown operator or wrong secret")
		return
	}
	now := s.now()
	s.ctl.Lock()
	s.tokenSeq++
	c := claims{Sub: s.cfg.Institution, Aud: operator, Iss: partner, Iat: now.Unix(),
		Exp: now.Add(time.Duration(s.faults.TokenTTL)).Unix(), Jti: strconv.FormatInt(s.tokenSeq, 10)}
	s.ctl.Unlock()
	payload, _ := json.Marshal(c)
	unsigned := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	writeJSON(w, r, http.StatusOK, map[string]string{"token": unsigned + "." + s.sign(unsigned)})
}

func (s *Server) sign(unsigned string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(unsigned))
	return b64.EncodeToString(m.Sum(nil))
}

// checkBearer returns an error code and message when the request's bearer
// token is missing, forged, foreign or expired.
func (s *Server) checkBearer(r *http.Request) (code, message string) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "invalid_token", "missing bearer token"
	}
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		return "invalid_token", "malformed token"
	}
	sig, err := b64.DecodeString(parts[2])
	want, _ := b64.DecodeString(s.sign(parts[0] + "." + parts[1]))
	if err != nil || !hmac.Equal(sig, want) {
		return "invalid_token", "bad token signature"
	}
	var c claims
	payload, err := b64.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return "invalid_token", "malformed token claims"
	}
	if c.Sub != s.cfg.Institution {
		return "invalid_token", "token issued for another institution"
	}
	jti, _ := strconv.ParseInt(c.Jti, 10, 64)
	s.ctl.Lock()
	revoked := jti < s.minToken
	s.ctl.Unlock()
	if revoked || !s.now().Before(time.Unix(c.Exp, 0)) {
		return "token_expired", "the token has expired"
	}
	return "", ""
}
