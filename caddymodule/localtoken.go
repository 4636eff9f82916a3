package caddymodule

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/session"
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
		return writeError(w, r, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "the token endpoint takes POST"})
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequest))
	if tooBig := new(http.MaxBytesError); errors.As(err, &tooBig) {
		return writeError(w, r, &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the token request body is too large"})
	} else if err != nil {
		return writeError(w, r, &apiError{Status: http.StatusBadRequest, Code: "bad_body", Message: "the request body could not be read"})
	}
	var creds struct {
		Operator *string `json:"operator"`
		Secret   *string `json:"secret"`
	}
	if len(body) > 0 && json.Unmarshal(body, &creds) != nil {
		return writeError(w, r, &apiError{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the token request body must be a JSON object such as {\"operator\":…,\"secret\":…}, or empty"})
	}
	if creds.Operator != nil || creds.Secret != nil {
		var op, sec string
		if creds.Operator != nil {
			op = *creds.Operator
		}
		if creds.Secret != nil {
			sec = *creds.Secret
		}
		try, wait := h.tokenGuard.admit(clientIP(r))
		if try == nil {
			return writeError(w, r, &apiError{Status: http.StatusTooManyRequests, Code: "too_many_attempts", RetryAfter: wait,
				Message: "too many wrong credentials from this address; try again after Retry-After seconds"})
		}
		ok := h.localToken.match(op, sec)
		h.tokenGuard.settle(try, ok)
		if !ok {
			// What the S-360 token endpoint answers a wrong secret.
			return writeError(w, r, &apiError{Status: http.StatusUnauthorized, Code: "invalid_credentials", Message: "unknown operator or wrong secret"})
		}
	}
	session.WriteJSON(w, http.StatusOK, map[string]string{"token": h.localToken.issue()})
	return nil
}

// The local token endpoint checks the operator's secret, so it limits the
// checks per client address: after tokenTries wrong credentials within
// tokenWindow of an address's first try, the address is refused (429)
// without a check until that window ends.
const (
	tokenTries  = 10
	tokenWindow = time.Minute
	tokenAddrs  = 10000 // addresses tracked at most; the oldest window is dropped first
)

// tokenGuard counts the credential checks of each client address in a
// window that starts with the address's first check. It belongs to the
// edge, so a reload neither forgets the counts nor resets the metric.
type tokenGuard struct {
	now     func() time.Time
	logger  *zap.Logger
	refused atomic.Uint64 // attempts answered 429 without a check

	mu    sync.Mutex
	addrs map[string]*list.Element // of *tokenTry, in order
	order list.List                // oldest window first
}

// tokenTry is an address's window: its checks (those under way and the
// failed ones) and failures.
type tokenTry struct {
	addr         string
	start        time.Time
	used, failed int
	gone         bool // expired or dropped
}

func newTokenGuard(now func() time.Time, logger *zap.Logger) *tokenGuard {
	return &tokenGuard{now: now, logger: logger, addrs: map[string]*list.Element{}}
}

// admit reserves a check for addr; it returns nil and the time left in its
// window when addr has used its tries. Reserving before the check, not
// counting failures after it, keeps concurrent guesses within the tries.
func (g *tokenGuard) admit(addr string) (*tokenTry, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for el := g.order.Front(); el != nil && !now.Before(el.Value.(*tokenTry).start.Add(tokenWindow)); el = g.order.Front() {
		g.drop(el)
	}
	el := g.addrs[addr]
	if el == nil {
		if g.order.Len() >= tokenAddrs {
			g.drop(g.order.Front())
		}
		el = g.order.PushBack(&tokenTry{addr: addr, start: now})
		g.addrs[addr] = el
	}
	t := el.Value.(*tokenTry)
	if t.used >= tokenTries {
		g.refused.Add(1)
		return nil, t.start.Add(tokenWindow).Sub(now)
	}
	t.used++
	return t, 0
}

// settle ends a check admit reserved: a right one gives its reservation
// back, a wrong one keeps it. The first failure of a window is logged.
func (g *tokenGuard) settle(t *tokenTry, ok bool) {
	g.mu.Lock()
	if ok {
		if t.used--; t.used == 0 && !t.gone {
			g.drop(g.addrs[t.addr]) // nothing to remember
		}
		g.mu.Unlock()
		return
	}
	t.failed++
	first := t.failed == 1
	g.mu.Unlock()
	if first {
		// Neither the operator nor the secret tried: only who and how many.
		g.logger.Warn("wrong credentials at the local token endpoint; logged once per address and minute, refused after 10",
			zap.String("client", t.addr), zap.Int("failures", 1))
	}
}

func (g *tokenGuard) drop(el *list.Element) {
	t := g.order.Remove(el).(*tokenTry)
	t.gone = true
	delete(g.addrs, t.addr)
}
