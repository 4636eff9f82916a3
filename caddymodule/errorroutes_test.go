package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// errorSite runs a site whose s360 handler's S-360 cannot be reached (a
// miss is a 502) and whose local token endpoint is limited (a 429 after
// ten wrong secrets), with siteExtra in the site block; it returns the
// site's base URL.
func errorSite(t *testing.T, siteExtra string) string {
	admin, port, dir := freePort(t), freePort(t), t.TempDir()
	t.Cleanup(func() { _ = caddy.Stop() })
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: admin})
	tester.InitServer(s360CaddyfileWith(admin, port, dir, 120, siteExtra), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// sidecarErrors makes the sidecar answer a 502 of its own (S-360 out of
// reach) and a 429 of its own (too many wrong secrets at the local token
// endpoint), and returns both answers.
func sidecarErrors(t *testing.T, base string) (unreachable, tooMany *http.Response, bodies [2]string) {
	t.Helper()
	post := func(path, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	unreachable, bodies[0] = post("/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed", `{}`)
	for range tokenTries {
		post("/tnai/backend-apis/v1/auth", `{"operator":"OP","secret":"wrong"}`)
	}
	tooMany, bodies[1] = post("/tnai/backend-apis/v1/auth", `{"operator":"OP","secret":"wrong"}`)
	return unreachable, tooMany, bodies
}

// Without handle_errors, the sidecar's own 502 and 429 are its JSON
// errors, with their headers; so they are with a handle_errors of other
// status codes only (a site's own 404 page), which Caddy would answer with
// the status alone.
func TestSidecarErrorsWithoutHandleErrors(t *testing.T) {
	for name, extra := range map[string]string{
		"none":          "",
		"404 page only": "handle_errors 404 {\n\t\trespond \"custom {err.status_code}\"\n\t}",
	} {
		t.Run(name, func(t *testing.T) { checkJSONErrors(t, extra) })
	}
}

func checkJSONErrors(t *testing.T, siteExtra string) {
	base := errorSite(t, siteExtra)
	unreachable, tooMany, bodies := sidecarErrors(t, base)
	for _, c := range []struct {
		resp    *http.Response
		body    string
		status  int
		want    string
		headers map[string]string
	}{
		{unreachable, bodies[0], 502, `{"error":"upstream_unreachable","message":"S-360 could not be reached"}` + "\n",
			map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Cache-Status": "s360edge; fwd=miss", "Retry-After": ""}},
		{tooMany, bodies[1], 429, `{"error":"too_many_attempts","message":"too many wrong credentials from this address; try again after Retry-After seconds"}` + "\n",
			map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}},
	} {
		if c.resp.StatusCode != c.status || c.body != c.want {
			t.Errorf("got %d %q, want %d %q", c.resp.StatusCode, c.body, c.status, c.want)
		}
		for k, v := range c.headers {
			if got := c.resp.Header.Get(k); got != v {
				t.Errorf("%d: %s %q, want %q", c.status, k, got, v)
			}
		}
	}
	checkRetryAfter(t, tooMany)
}

// checkRetryAfter checks the local token endpoint's Retry-After: the rest
// of the minute its first wrong secret began.
func checkRetryAfter(t *testing.T, resp *http.Response) {
	t.Helper()
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 50 || s > 60 {
		t.Errorf("Retry-After %q, want the rest of the minute", resp.Header.Get("Retry-After"))
	}
}

// With handle_errors, the site restyles the sidecar's own 502 and 429, as
// it does any handler's error; the status and the headers that say when to
// come back and what the cache did stay.
func TestSidecarErrorsRestyledByHandleErrors(t *testing.T) {
	base := errorSite(t, `handle_errors {
		respond "custom {err.status_code}"
	}`)
	unreachable, tooMany, bodies := sidecarErrors(t, base)
	if unreachable.StatusCode != 502 || bodies[0] != "custom 502" || unreachable.Header.Get("Cache-Status") != "s360edge; fwd=miss" {
		t.Errorf("502: got %d %q, Cache-Status %q", unreachable.StatusCode, bodies[0], unreachable.Header.Get("Cache-Status"))
	}
	if tooMany.StatusCode != 429 || bodies[1] != "custom 429" {
		t.Errorf("429: got %d %q", tooMany.StatusCode, bodies[1])
	}
	checkRetryAfter(t, tooMany)
}
