package caddymodule

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/edge"
)

// freePort is a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeListen(t))
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	return p
}

// s360Caddyfile is a site whose s360 handler never calls S-360 on its own (no polls), with
// the given rate limit; anything it passes on gets a plain 200 from respond. Its S-360
// cannot be reached (a miss is a 502).
func s360Caddyfile(adminPort, httpPort int, dir string, calls int) string {
	return s360CaddyfileWith(adminPort, httpPort, dir, calls, "")
}

// s360CaddyfileWith is s360Caddyfile with siteExtra in the site block, before respond.
func s360CaddyfileWith(adminPort, httpPort int, dir string, calls int, siteExtra string) string {
	return fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	grace_period 1ns
	order s360 before respond
}

http://127.0.0.1:%d {
	s360 {
		upstream http://127.0.0.1:9
		operator OP
		secret s3cret
		shop https://shop.example
		storage %s
		setup_poll 0
		updates_poll 0
		rate_limit %d 1m
	}
	%s
	respond "site" 200
}
`, adminPort, httpPort, httpPort, dir, calls, siteExtra)
}

// TestCaddyProvisionReloadCleanup runs the handler in an in-process Caddy through its admin
// API, as `caddy reload` does: it answers, a reload keeps the one edge of the storage and
// applies the new limit, a failed reload changes nothing, and a config without the handler
// closes that edge.
func TestCaddyProvisionReloadCleanup(t *testing.T) {
	admin, port, dir := freePort(t), freePort(t), t.TempDir()
	// The in-process Caddy outlives the test (caddytest has no stop); stop what it runs.
	t.Cleanup(func() { _ = caddy.Stop() })
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: admin})
	tester.InitServer(s360Caddyfile(admin, port, dir, 120), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	denied := func() {
		t.Helper()
		req, err := http.NewRequest("POST", base+"/tnseb/backend-apis/catalogService/v1_33/deleteEverything", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp := tester.AssertResponseCode(req, http.StatusForbidden)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if body := string(b); err != nil || !strings.Contains(body, `"error":"method_denied"`) {
			t.Fatalf("answer of a method outside the list: %s, %v", body, err)
		}
	}
	denied()
	tester.AssertGetResponse(base+"/", http.StatusOK, "site") // not S-360's: passed on
	first := runningEdge(t)
	if got := appliedOf(first).limit; got != 120 {
		t.Fatalf("limit after the first load: %d, want 120", got)
	}

	tester.InitServer(s360Caddyfile(admin, port, dir, 60), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	denied()
	if e := runningEdge(t); e != first {
		t.Fatal("a reload opened a second edge on the same storage")
	}
	if got := appliedOf(first).limit; got != 60 {
		t.Fatalf("limit after the reload: %d, want 60", got)
	}

	// A reload that fails (cart_target is refused at provisioning) keeps the running config.
	bad := strings.Replace(s360Caddyfile(admin, port, dir, 30), "rate_limit 30 1m", "rate_limit 30 1m\n\t\tcart_target nowhere", 1)
	resp, err := http.Post(fmt.Sprintf("http://localhost:%d/load", admin), "text/caddyfile", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(msg), `s360: cart_target: \"nowhere\"; write cart_target cart or cart_target checkout`) {
		t.Fatalf("failed reload: %d %s, want the cart_target error", resp.StatusCode, msg)
	}
	denied()
	if e := runningEdge(t); e != first || appliedOf(e).limit != 60 {
		t.Fatalf("after a failed reload: same edge %v, limit %d, want 60", e == first, appliedOf(e).limit)
	}

	tester.InitServer(fmt.Sprintf(`{
	skip_install_trust
	admin localhost:%d
	http_port %d
	grace_period 1ns
}

http://127.0.0.1:%d {
	respond "plain" 200
}
`, admin, port, port), "caddyfile")
	tester.AssertGetResponse(base+"/", http.StatusOK, "plain")
	var open []*edge.Edge
	eachEdge(func(e *edge.Edge) { open = append(open, e) })
	if len(open) != 0 {
		t.Fatalf("%d edges still open after the handler left the config", len(open))
	}
	// Cleanup closed the store: its directory opens again in this process.
	s, err := cachestore.Open(cachestore.Options{Dir: dir})
	if err != nil {
		t.Fatalf("the store is still held after cleanup: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
