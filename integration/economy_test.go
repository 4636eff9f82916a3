package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func adminPurge(t *testing.T, e *edge, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+e.Admin+"/s360/purge", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("purge %s: %d %s", body, resp.StatusCode, b)
	}
	return string(b)
}

func floorKeys(t *testing.T, e *edge) int {
	t.Helper()
	var st struct {
		Edges []struct {
			Budget struct {
				FloorKeys int `json:"floor_keys"`
			}
		}
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &st)
	if len(st.Edges) != 1 {
		t.Fatalf("stats: %+v", st)
	}
	return st.Edges[0].Budget.FloorKeys
}

// TestFloorsCountAttemptsAndSurviveRestart: while S-360 answers
// in_progress, six requests make one call; the floor holds across a
// restart.
func TestFloorsCountAttemptsAndSurviveRestart(t *testing.T) {
	s := startSim(t, "-catalog-floor", "0", "-in-progress", "100")
	e := startEdge(t, caddyfile(s, ""))
	url := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
	for i := range 6 {
		status, hdr, b := post(t, url, `{}`)
		if i > 0 && (status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) || hdr.Get("Retry-After") == "") {
			t.Fatalf("request %d during in_progress: %d %q %s", i+1, status, hdr.Get("Retry-After"), b)
		}
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("6 requests during in_progress made %d calls, want 1", n)
	}
	e.Stop(t)
	e = restartEdge(t, e)
	if n := floorKeys(t, e); n != 1 {
		t.Fatalf("floor_keys after restart: %d, want 1", n)
	}
	if status, _, b := post(t, url, `{}`); status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) {
		t.Fatalf("after restart: %d %s", status, b)
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("a restart let %d calls through, want 1 in all", n)
	}
}

// TestFeedsAnsweredFromCopies: the website's repeated feed calls do not
// reach S-360.
func TestFeedsAnsweredFromCopies(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	fx := s.Fixtures(t)
	for range 60 {
		if status, _, b := post(t, e.URL+api+"catalogService/v1_33/getLastSetupUpdate", `{}`); status != 200 {
			t.Fatalf("getLastSetupUpdate: %d %s", status, b)
		}
	}
	if n := s.Counters(t).Calls["catalogService/getLastSetupUpdate"]; n > 2 {
		t.Fatalf("60 x getLastSetupUpdate made %d upstream calls", n)
	}
	feed := fmt.Sprintf(`{"pointOfSalesId":%d,"productIds":[%d],"referenceDate":"2026-01-01T00:00:00.000Z"}`, fx.PosID, fx.Products[0].ID)
	url := e.URL + api + "availabilityService/v1_33/getUpdatedAvailabilities"
	status, _, first := post(t, url, feed)
	status2, hdr, again := post(t, url, feed)
	if status != 200 || status2 != 200 || !strings.HasSuffix(hdr.Get("Cache-Status"), "detail=feed-copy") || string(again) != string(first) {
		t.Fatalf("feed twice: %d, %d %q", status, status2, hdr.Get("Cache-Status"))
	}
	c := s.Counters(t)
	if n := c.Calls["availabilityService/getUpdatedAvailabilities"]; n != 1 {
		t.Fatalf("two identical feed calls made %d upstream calls", n)
	}
	if c.Statuses["509"] != 0 {
		t.Fatalf("S-360 answered 509 %d times", c.Statuses["509"])
	}
}

// TestSoftPurgeKeepsAnswering: after the README's purge, the next request
// is answered 200 (detail=purged) within the catalog's floor; a hard purge
// deletes.
func TestSoftPurgeKeepsAnswering(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, ""))
	url := e.URL + api + "catalogService/v1_33/getCatalogDetailed"
	_, _, first := post(t, url, `{}`)
	if got := adminPurge(t, e, `{"class":"catalog"}`); !strings.Contains(got, `"purged":1`) {
		t.Fatalf("soft purge: %s", got)
	}
	status, hdr, b := post(t, url, `{}`)
	if status != 200 || !strings.HasSuffix(hdr.Get("Cache-Status"), "detail=purged") || string(b) != string(first) {
		t.Fatalf("after a soft purge: %d %q", status, hdr.Get("Cache-Status"))
	}
	if n := s.Counters(t).Calls["catalogService/getCatalogDetailed"]; n != 1 {
		t.Fatalf("%d catalog calls within the floor, want 1", n)
	}
	if got := adminPurge(t, e, `{"class":"catalog","hard":true}`); !strings.Contains(got, `"purged":1`) {
		t.Fatalf("hard purge: %s", got)
	}
	if status, _, b := post(t, url, `{}`); status != 429 || !strings.Contains(string(b), `"error":"min_interval"`) {
		t.Fatalf("after a hard purge within the floor: %d %s", status, b)
	}
}
