package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/upstream"
)

const (
	tokenSecret = "the-real-secret-8c1f"
	rightCreds  = `{"operator":"X_WEB","secret":"` + tokenSecret + `"}`
	wrongCreds  = `{"operator":"GUESSED_OP","secret":"guessed-secret-77"}`
)

// guardedHandler is newTestHandler whose token guard runs on the clock
// *now and logs WARN and above to the returned logs.
func guardedHandler(t *testing.T) (*Handler, *time.Time, *observer.ObservedLogs) {
	t.Helper()
	h := newTestHandler(t, &fakeUpstream{}, time.Second)
	h.localToken = newLocalTokens("X_WEB", tokenSecret)
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	core, logs := observer.New(zapcore.WarnLevel)
	h.tokenGuard = newTokenGuard(func() time.Time { return now }, zap.New(core))
	return h, &now, logs
}

// tokenFrom posts body to the local token endpoint as the client ip, which
// Caddy resolved (trusted_proxies honoured) behind one proxy address.
func tokenFrom(h *Handler, ip, body string) (code int, e apiError, retryAfter string, passed bool) {
	r := httptest.NewRequest("POST", upstream.AuthPath, strings.NewReader(body))
	r.RemoteAddr = "10.0.0.1:4000" // the proxy: the same for every client
	r.Header.Set("Content-Type", "application/json")
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: ip}))
	w := httptest.NewRecorder()
	next := &nextHandler{}
	h.ServeHTTP(w, r, next)
	json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e, w.Header().Get("Retry-After"), next.called
}

func TestLocalTokenRefusesAnAddressAfterTenFailures(t *testing.T) {
	h, now, _ := guardedHandler(t)
	const a, b = "203.0.113.9", "198.51.100.1"
	for i := range tokenTries {
		if code, e, _, _ := tokenFrom(h, a, wrongCreds); code != 401 || e.Code != "invalid_credentials" {
			t.Fatalf("failure %d: %d %+v, want 401 invalid_credentials", i+1, code, e)
		}
	}
	code, e, retry, _ := tokenFrom(h, a, wrongCreds)
	if code != 429 || e.Code != "too_many_attempts" || e.Message == "" || retry != "60" {
		t.Fatalf("11th attempt: %d %+v Retry-After %q, want 429 too_many_attempts with Retry-After 60", code, e, retry)
	}

	*now = now.Add(45 * time.Second)
	// Refused without a check: even the right secret.
	if code, e, retry, _ := tokenFrom(h, a, rightCreds); code != 429 || e.Code != "too_many_attempts" || retry != "15" {
		t.Fatalf("right secret from the refused address: %d %+v Retry-After %q, want 429 with Retry-After 15", code, e, retry)
	}
	// A request without credentials checks nothing: it still gets its
	// (powerless) token, so that one guesser cannot shut out a website
	// whose visitors share its address.
	if code, e, _, _ := tokenFrom(h, a, `{"partner":"site"}`); code != 200 {
		t.Fatalf("no credentials from the refused address: %d %+v, want 200", code, e)
	}
	if code, e, _, _ := tokenFrom(h, b, rightCreds); code != 200 {
		t.Fatalf("right secret from another address: %d %+v, want 200 at once", code, e)
	}

	*now = now.Add(15 * time.Second) // the window ends
	if code, e, _, _ := tokenFrom(h, a, rightCreds); code != 200 {
		t.Fatalf("right secret after the window: %d %+v, want 200", code, e)
	}
	if code, e, _, _ := tokenFrom(h, a, wrongCreds); code != 401 {
		t.Fatalf("wrong secret after the window: %d %+v, want 401: a new window", code, e)
	}
	if n := h.tokenGuard.refused.Load(); n != 2 {
		t.Fatalf("%d refusals counted, want 2", n)
	}
}

// Right secrets do not use up an address's tries.
func TestLocalTokenRightSecretsAreNotCounted(t *testing.T) {
	h, _, _ := guardedHandler(t)
	for i := range 3 * tokenTries {
		if code, e, _, _ := tokenFrom(h, "203.0.113.9", rightCreds); code != 200 {
			t.Fatalf("right secret %d: %d %+v", i+1, code, e)
		}
	}
	if n := len(h.tokenGuard.addrs); n != 0 {
		t.Fatalf("%d addresses tracked after right secrets only, want 0", n)
	}
}

// Concurrent guesses from one address get no more checks than serial ones:
// a try is reserved before the check, and only a right secret gives it back.
func TestLocalTokenConcurrentGuessesStayWithinTheTries(t *testing.T) {
	h, _, _ := guardedHandler(t)
	g := h.tokenGuard
	var underWay []*tokenTry
	for i := range tokenTries {
		try, _ := g.admit("192.0.2.7")
		if try == nil {
			t.Fatalf("check %d refused", i+1)
		}
		underWay = append(underWay, try)
	}
	if try, wait := g.admit("192.0.2.7"); try != nil || wait != tokenWindow {
		t.Fatalf("an 11th check while 10 are under way: %v, %s; want refused for the window", try, wait)
	}
	for _, try := range underWay {
		g.settle(try, true)
	}
	if try, _ := g.admit("192.0.2.7"); try == nil {
		t.Fatal("refused after 10 right secrets")
	}

	codes := make(chan int, 50)
	var wg sync.WaitGroup
	for range cap(codes) {
		wg.Go(func() {
			code, _, _, _ := tokenFrom(h, "203.0.113.9", wrongCreds)
			codes <- code
		})
	}
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	if got[401] != tokenTries || got[429] != cap(codes)-tokenTries {
		t.Fatalf("answers %v, want %d × 401 and the rest 429", got, tokenTries)
	}
}

func TestLocalTokenGuardIsBounded(t *testing.T) {
	h, _, _ := guardedHandler(t)
	g := h.tokenGuard
	fail := func(ip string) {
		try, _ := g.admit(ip)
		if try == nil {
			t.Fatalf("%s refused", ip)
		}
		g.settle(try, false)
	}
	const oldest = "192.0.2.1"
	for range tokenTries {
		fail(oldest)
	}
	if code, _, _, _ := tokenFrom(h, oldest, rightCreds); code != 429 {
		t.Fatalf("oldest address not refused: %d", code)
	}
	for i := 1; i < tokenAddrs; i++ {
		fail(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255))
	}
	if n := len(g.addrs); n != tokenAddrs {
		t.Fatalf("%d addresses tracked, want %d", n, tokenAddrs)
	}
	fail("198.51.100.1") // the 10,001st address drops the oldest
	if n, m := len(g.addrs), g.order.Len(); n != tokenAddrs || m != tokenAddrs {
		t.Fatalf("%d addresses (%d in order) tracked, want %d", n, m, tokenAddrs)
	}
	if _, ok := g.addrs[oldest]; ok {
		t.Fatal("the oldest address is still tracked")
	}
	if _, ok := g.addrs["10.0.0.1"]; !ok {
		t.Fatal("the second oldest address was dropped too")
	}
	if code, _, _, _ := tokenFrom(h, oldest, rightCreds); code != 200 {
		t.Fatalf("the dropped address: %d, want 200 (forgotten)", code)
	}
}

func TestLocalTokenFailuresLoggedOncePerAddressAndMinute(t *testing.T) {
	h, now, logs := guardedHandler(t)
	for range 12 {
		tokenFrom(h, "203.0.113.9", wrongCreds)
	}
	for range 3 {
		tokenFrom(h, "198.51.100.1", wrongCreds)
	}
	tokenFrom(h, "198.51.100.2", rightCreds)
	check := func(want ...string) {
		t.Helper()
		entries := logs.TakeAll()
		var got []string
		for _, e := range entries {
			all := e.Message + " " + fmt.Sprint(e.ContextMap())
			for _, secret := range []string{tokenSecret, "guessed-secret", "GUESSED_OP", "X_WEB"} {
				if strings.Contains(all, secret) {
					t.Errorf("log %q holds %q", all, secret)
				}
			}
			if e.Level != zapcore.WarnLevel || e.ContextMap()["failures"] != int64(1) {
				t.Errorf("log %s %q: want WARN with a count of failures", e.Level, all)
			}
			got = append(got, fmt.Sprint(e.ContextMap()["client"]))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("WARN lines for clients %v, want %v", got, want)
		}
	}
	check("203.0.113.9", "198.51.100.1")
	*now = now.Add(59 * time.Second)
	tokenFrom(h, "198.51.100.1", wrongCreds)
	check()
	*now = now.Add(time.Second)
	tokenFrom(h, "203.0.113.9", wrongCreds)
	tokenFrom(h, "203.0.113.9", wrongCreds)
	check("203.0.113.9")
}

func TestLocalTokenRefusalsMetric(t *testing.T) {
	h, _, _ := guardedHandler(t)
	e, err := edge.Open(edge.Options{Dir: t.TempDir(), Institution: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// The collector reads the pooled edges at scrape time.
	key := t.Name()
	if _, _, err := edges.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledEdge{Edge: e, tokenGuard: h.tokenGuard, queue: h.queue}, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edges.Delete(key) })
	refused := func(want int) {
		t.Helper()
		text := fmt.Sprintf("# HELP caddy_s360_local_token_refused_total Attempts at the local token endpoint refused without a check (429), their address having sent 10 wrong credentials within a minute.\n"+
			"# TYPE caddy_s360_local_token_refused_total counter\ncaddy_s360_local_token_refused_total %d\n", want)
		if err := testutil.CollectAndCompare(collector{}, strings.NewReader(text), "caddy_s360_local_token_refused_total"); err != nil {
			t.Fatal(err)
		}
	}
	refused(0)
	for range tokenTries + 3 {
		tokenFrom(h, "203.0.113.9", wrongCreds)
	}
	tokenFrom(h, "203.0.113.9", rightCreds)
	refused(4)
}

func TestLocalTokenOffPassesThrough(t *testing.T) {
	h, _, _ := guardedHandler(t)
	off := false
	h.LocalToken = &off
	for _, p := range []string{upstream.AuthPath, "/tnco/backend-apis/v1/auth"} {
		w, next := serve(h, "POST", p, rightCreds, nil)
		if !next.called || w.Code != 418 {
			t.Fatalf("%s with local_token off: %d %s, want the next handler's answer", p, w.Code, w.Body)
		}
	}
	if n := len(h.tokenGuard.addrs); n != 0 {
		t.Fatalf("%d addresses tracked with local_token off", n)
	}
}

func TestUnmarshalCaddyfileLocalToken(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `{}`},
		{"local_token off", `{"local_token":false}`},
		{"local_token on", `{"local_token":true}`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got, _ := caddyfileJSON(t, tc.in); got != tc.want {
				t.Fatalf("JSON config %s, want %s", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ in, want string }{
		{"local_token no", `s360: local_token: want on or off, got "no"; write e.g. local_token off`},
		{"local_token", "s360: local_token: wrong number of values"},
		{"local_token off on", "s360: local_token: wrong number of values"},
		{"local_token off\nlocal_token on", "s360: local_token: given twice"},
		{"adaptive maybe", `adaptive: want on or off, got "maybe"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("s360 {\n" + tc.in + "\n}"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%q: got %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}
