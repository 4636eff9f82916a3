package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestIntegrityUnderSpoiledAnswers drives the simulator's /_sim/corrupt
// fault (cut bodies, HTML pages, duplicate keys, hang-ups after the method
// ran) through the real sidecar.
func TestIntegrityUnderSpoiledAnswers(t *testing.T) {
	s := startSim(t, "-catalog-floor", "0", "-availability-floor", "0")
	e := startEdge(t, caddyfile(s, "max_age catalogService/getPOSConfig 1s\n\t\tstale_while_revalidate 1ms"+
		// getLastSetupUpdate is called twice below: no feed floor.
		"\n\t\tmin_interval catalogService/getLastSetupUpdate 0"))
	fx := s.Fixtures(t)
	pos := e.URL + api + "catalogService/v1_33/getPOSConfig"
	errCode := func(body []byte) (out struct{ Error, Message, RedirectURL string }) {
		json.Unmarshal(body, &out)
		return out
	}

	t.Run("an invalid answer never replaces the entry", func(t *testing.T) {
		status, hdr, good := post(t, pos, `{}`)
		if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
			t.Fatalf("first call: %d %q %s", status, hdr.Get("Cache-Status"), good)
		}
		time.Sleep(1100 * time.Millisecond) // max_age 1s: the entry is now stale
		for _, mode := range []string{"cut", "html"} {
			before := s.Counters(t).Calls["catalogService/getPOSConfig"]
			s.Control(t, "/_sim/corrupt", `{"mode":"`+mode+`","count":1}`)
			status, hdr, body := post(t, pos, `{}`)
			if status != 200 || !strings.Contains(hdr.Get("Cache-Status"), "detail=stale-if-error") || string(body) != string(good) {
				t.Fatalf("%s: got %d %q %.200s, want the stale entry with stale-if-error", mode, status, hdr.Get("Cache-Status"), body)
			}
			if n := s.Counters(t).Calls["catalogService/getPOSConfig"]; n != before+1 {
				t.Fatalf("%s: %d upstream calls, want 1", mode, n-before)
			}
		}
		// The next good answer is stored.
		status, hdr, _ = post(t, pos, `{}`)
		if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=stale; stored" {
			t.Fatalf("after the faults: %d %q", status, hdr.Get("Cache-Status"))
		}
	})

	t.Run("an uncached method never passes a bad answer as 200", func(t *testing.T) {
		for _, mode := range []string{"cut", "html"} {
			s.Control(t, "/_sim/corrupt", `{"mode":"`+mode+`","count":1}`)
			status, _, body := post(t, e.URL+api+"catalogService/v1_33/getLastSetupUpdate", `{}`)
			if status != 502 || errCode(body).Error != "upstream_invalid" {
				t.Fatalf("%s: got %d %.200s, want 502 upstream_invalid", mode, status, body)
			}
		}
	})

	t.Run("an order whose outcome is unknown", func(t *testing.T) {
		cart := s.URL + "/api/1/redirect/cart"
		for _, mode := range []string{"hangup", "cut", "html", "duplicate"} {
			var before []json.RawMessage
			getJSON(t, s.URL+"/_sim/orders", &before)
			calls := s.Counters(t).Calls[orderCounter]
			s.Control(t, "/_sim/corrupt", `{"mode":"`+mode+`","count":1}`)
			status, hdr, body := post(t, e.URL+orderPath, stormOrder(fx, 0), "Accept", "application/json")
			out := errCode(body)
			if status != 502 || out.Error != "order_unknown" || out.RedirectURL != cart || hdr.Get("Location") != cart ||
				!strings.Contains(out.Message, "may exist") || strings.Count(string(body), "redirectUrl") != 1 {
				t.Fatalf("%s: got %d Location=%q %s, want 502 order_unknown pointing to %s", mode, status, hdr.Get("Location"), body, cart)
			}
			var after []json.RawMessage
			getJSON(t, s.URL+"/_sim/orders", &after)
			if len(after) != len(before)+1 {
				t.Fatalf("%s: %d orders created, want 1 (the one whose outcome was unknown)", mode, len(after)-len(before))
			}
			if n := s.Counters(t).Calls[orderCounter]; n != calls+1 {
				t.Fatalf("%s: %d createOrUpdateOrder calls, want 1: never retried", mode, n-calls)
			}
		}
	})

	t.Run("an order answer carries only the sidecar's redirect", func(t *testing.T) {
		s.Control(t, "/_sim/corrupt", `{"mode":"redirects","count":1}`)
		status, _, body := post(t, e.URL+orderPath, stormOrder(fx, 0), "Accept", "application/json")
		var out struct {
			RedirectURL     string
			OrderUpdateData struct{ OrderID int64 }
		}
		json.Unmarshal(body, &out)
		want := s.URL + "/api/1/redirect/cart?orderId="
		if status != 200 || out.OrderUpdateData.OrderID == 0 || !strings.HasPrefix(out.RedirectURL, want) ||
			strings.Contains(string(body), "evil.example") || strings.Count(strings.ToLower(string(body)), `"redirecturl"`) != 1 {
			t.Fatalf("got %d %s, want 200 with exactly one redirectUrl, to %s…", status, body, want)
		}
	})

	t.Run("the local token endpoint checks posted credentials", func(t *testing.T) {
		for _, c := range []struct {
			body   string
			status int
		}{
			{`{"operator":"` + simOperator + `","partner":"site","secret":"` + simSecret + `"}`, 200},
			{`{"operator":"` + simOperator + `","secret":"wrong"}`, 401},
			{``, 200},
		} {
			calls := s.Counters(t).Calls["auth"]
			status, _, body := post(t, e.URL+"/tnai/backend-apis/v1/auth", c.body)
			if status != c.status || (status == 401 && errCode(body).Error != "invalid_credentials") {
				t.Fatalf("%s: got %d %s, want %d", c.body, status, body, c.status)
			}
			if n := s.Counters(t).Calls["auth"]; n != calls {
				t.Fatalf("the local token endpoint called S-360")
			}
		}
	})
}
