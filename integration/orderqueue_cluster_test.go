package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s360edge/s360edge/internal/redistest"
)

// TestClusterOrderQueue: buyers post their orders alternately on two
// sidecars of one cluster, which may make 12 calls in 6 s together. The
// institution has one line: every order is placed exactly once, in the
// order the buyers arrived whichever node they came to, and S-360 never
// answers 509. A ticket of node A is followed on node B: its place in the
// line, then its outcome.
func TestClusterOrderQueue(t *testing.T) {
	s := startSim(t)
	r := redistest.Start(t, "")
	nodes := startNodes(t, 2, withCluster(caddyfile(s, "rate_limit 12 6s\n\t\tclient_quota off\n\t\torder_queue_per_client 100\n\t\torder_hold 500ms"), r))
	waitJoined(t, nodes, 2)
	fx := s.Fixtures(t)
	const buyers = 24
	results := make([]map[string]any, buyers)
	errs := make([]error, buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		e := nodes[i%2]
		wg.Go(func() { results[i], errs[i] = placeAsync(e.URL, buyerOrder(fx, i)) })
		// The next buyer arrives once this one is in line, on either
		// node: the order of arrival is known.
		waitFor(t, fmt.Sprintf("buyer %d in line", i), 10*time.Second, func() bool { return queueStats(t, e).Enqueued == i/2+1 })
	}

	// The last buyer, on node A, follows its ticket on node B.
	status, hdr, body := post(t, nodes[0].URL+orderPath, buyerOrder(fx, buyers), "Accept", "application/json", "Prefer", "respond-async")
	if status != http.StatusAccepted {
		t.Fatalf("the last buyer's order on node A: %d %s; want 202 and a ticket", status, body)
	}
	ticket := nodes[1].URL + hdr.Get("Location")
	var m map[string]any
	getJSON(t, ticket, &m)
	if m["status"] != "queued" || m["position"] == nil || m["position"].(float64) < 1 {
		t.Fatalf("node B shows node A's ticket as %v; want queued, with its position", m)
	}
	waitFor(t, "node A's ticket placed, on node B", 2*time.Minute, func() bool {
		resp, err := http.Get(ticket)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m = nil
		json.Unmarshal(b, &m)
		if s := m["status"]; s != "queued" && s != "sending" && s != "placed" {
			t.Fatalf("node A's ticket on node B: %d %s", resp.StatusCode, b)
		}
		return resp.StatusCode == http.StatusOK && m["status"] == "placed"
	})
	if !strings.Contains(fmt.Sprint(m["redirectUrl"]), "orderId=") {
		t.Fatalf("node A's ticket on node B: %v; want the cart", m)
	}

	wg.Wait()
	for i := range buyers {
		if errs[i] != nil {
			t.Fatalf("buyer %d: %v", i, errs[i])
		}
		if results[i]["statusCode"] != "success" || !strings.Contains(fmt.Sprint(results[i]["redirectUrl"]), "orderId=") {
			t.Fatalf("buyer %d: %v", i, results[i])
		}
	}
	want := make([]string, buyers+1)
	for i := range want {
		want[i] = fmt.Sprintf("buyer-%02d", i)
	}
	if refs := orderRefs(t, s); !slices.Equal(refs, want) {
		t.Fatalf("the simulator created %d orders in this order: %v; want each buyer's once, in arrival order", len(refs), refs)
	}
	if n := s.Counters(t).Statuses["509"]; n != 0 {
		t.Fatalf("the simulator answered 509 %d times", n)
	}
	a, b := queueStats(t, nodes[0]), queueStats(t, nodes[1])
	if a.Admitted+b.Admitted != buyers+1 || a.Placed+b.Placed != buyers+1 || a.Length != 0 || b.Length != 0 {
		t.Fatalf("queue stats %+v and %+v", a, b)
	}
	t.Logf("orders sent by node A: %d, by node B: %d", a.Admitted, b.Admitted)
	checkKeys(t, r)
}
