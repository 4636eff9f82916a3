package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestLocalTokenEndpointLimitsGuesses: the sidecar's own token endpoint
// checks the operator's secret, so it refuses an address after 10 wrong
// credentials within a minute.
func TestLocalTokenEndpointLimitsGuesses(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	auth := e.URL + "/tnai/backend-apis/v1/auth"
	wrong := `{"operator":"` + simOperator + `","secret":"guessed-secret-77"}`
	right := `{"operator":"` + simOperator + `","secret":"` + simSecret + `"}`

	for i := 1; i <= 12; i++ {
		status, hdr, body := post(t, auth, wrong)
		var out struct{ Error, Message string }
		json.Unmarshal(body, &out)
		if i <= 10 {
			if status != 401 || out.Error != "invalid_credentials" {
				t.Fatalf("guess %d: %d %s, want 401 invalid_credentials", i, status, body)
			}
			continue
		}
		if retry, err := strconv.Atoi(hdr.Get("Retry-After")); status != 429 || out.Error != "too_many_attempts" || out.Message == "" || err != nil || retry < 1 || retry > 60 {
			t.Fatalf("guess %d: %d Retry-After %q %s, want 429 too_many_attempts with Retry-After in 1..60", i, status, hdr.Get("Retry-After"), body)
		}
	}
	if status, _, body := post(t, auth, right); status != 429 {
		t.Fatalf("right secret from the refused 127.0.0.1: %d %s, want 429 (no check)", status, body)
	}

	// Another loopback address is another client: it is checked at once.
	other := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		return d.DialContext(ctx, network, addr)
	}}}
	resp, err := other.Post(auth, "application/json", strings.NewReader(right))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"token"`) {
		t.Fatalf("right secret from 127.0.0.2: %d %s, want 200", resp.StatusCode, b)
	}

	warns := lines(e.proc, "wrong credentials at the local token endpoint")
	if len(warns) != 1 || !strings.Contains(warns[0], `"client":"127.0.0.1"`) || !strings.Contains(warns[0], `"level":"warn"`) {
		t.Fatalf("WARN lines %q, want one for 127.0.0.1", warns)
	}
	if out := e.Output(); strings.Contains(out, "guessed-secret") || strings.Contains(out, simSecret) {
		t.Fatal("a secret, tried or configured, is in the log")
	}
	resp, err = http.Get("http://" + e.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "\ncaddy_s360_local_token_refused_total 3\n") {
		t.Errorf("metrics lack caddy_s360_local_token_refused_total 3")
	}

	// local_token off: the path is the website's, as before the sidecar
	// (a static site without such a file: file_server's 404).
	e.Reload(t, caddyfile(s, "local_token off"))
	if status, hdr, body := post(t, auth, right); status != 404 || strings.Contains(hdr.Get("Content-Type"), "json") {
		t.Fatalf("with local_token off: %d %s %s, want the website's 404", status, hdr.Get("Content-Type"), body)
	}
}
