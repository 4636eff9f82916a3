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
)

// buyerOrder is stormOrder with the buyer's number as its external
// reference, which the simulator's order list shows.
func buyerOrder(fx fixtures, i int) string {
	return strings.Replace(stormOrder(fx, i), "{", fmt.Sprintf(`{"externalReference":"buyer-%02d",`, i), 1)
}

// queueStats is the order queue's line of /s360/stats.
func queueStats(t *testing.T, e *edge) (q struct {
	Length    int `json:"length"`
	Enqueued  int `json:"enqueued"`
	Admitted  int `json:"admitted"`
	Placed    int `json:"placed"`
	Withdrawn int `json:"withdrawn"`
	Abandoned int `json:"abandoned"`
}) {
	t.Helper()
	var stats struct {
		Edges []struct {
			Queue json.RawMessage `json:"order_queue"`
		} `json:"edges"`
	}
	getJSON(t, "http://"+e.Admin+"/s360/stats", &stats)
	if len(stats.Edges) != 1 {
		t.Fatalf("stats of %d edges", len(stats.Edges))
	}
	if err := json.Unmarshal(stats.Edges[0].Queue, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

// orderRefs are the external references of the orders the simulator
// created, in the order it created them.
func orderRefs(t *testing.T, s *sim) []string {
	t.Helper()
	o := s.Orders(t)
	slices.SortFunc(o, func(a, b simOrder) int { return int(a.OrderID - b.OrderID) })
	var refs []string
	for _, x := range o {
		refs = append(refs, x.Ref)
	}
	return refs
}

// placeAsync posts an order with Prefer: respond-async and follows its
// ticket until the outcome; it returns the final JSON, or an error.
func placeAsync(base, body string) (map[string]any, error) {
	req, _ := http.NewRequest("POST", base+orderPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := noRedirect.Do(req)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return m, nil // placed within order_hold
	case http.StatusAccepted:
	default:
		return nil, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	loc := resp.Header.Get("Location")
	for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		resp, err := http.Get(base + loc)
		if err != nil {
			return nil, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m = nil
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("ticket %d %s", resp.StatusCode, b)
		}
		if s := m["status"]; s != "queued" && s != "sending" {
			return m, nil
		}
	}
	return nil, fmt.Errorf("ticket %s still %v after 4 minutes", loc, m["status"])
}

// TestOnSaleQueue: 60 buyers post their orders within a second while the
// sidecar may make 30 calls a minute. Every order is placed exactly once,
// in the order the buyers arrived, and S-360 never answers 509.
func TestOnSaleQueue(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, "rate_limit 30 1m\n\t\tclient_quota off\n\t\torder_queue_per_client 100"))
	fx := s.Fixtures(t)
	const buyers = 60
	results := make([]map[string]any, buyers)
	errs := make([]error, buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = placeAsync(e.URL, buyerOrder(fx, i))
		}()
		// The next buyer arrives once this one is in line: the order of
		// arrival is known.
		waitFor(t, fmt.Sprintf("buyer %d in line", i), 10*time.Second, func() bool { return queueStats(t, e).Enqueued == i+1 })
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
	refs := orderRefs(t, s)
	want := make([]string, buyers)
	for i := range want {
		want[i] = fmt.Sprintf("buyer-%02d", i)
	}
	if !slices.Equal(refs, want) {
		t.Fatalf("the simulator created %d orders in this order: %v; want each buyer's once, in arrival order", len(refs), refs)
	}
	if n := s.Counters(t).Statuses["509"]; n != 0 {
		t.Fatalf("the simulator answered 509 %d times", n)
	}
	if q := queueStats(t, e); q.Placed != buyers || q.Admitted != buyers || q.Length != 0 {
		t.Fatalf("queue stats %+v", q)
	}
}

// An API client without Prefer waits up to order_wait; its order, still
// queued then, is withdrawn and never sent, even once the budget frees; so
// is an order whose ticket nobody follows for abandon_after.
func TestWithdrawnOrderIsNeverSent(t *testing.T) {
	s := startSim(t)
	e := startEdge(t, caddyfile(s, "rate_limit 3 20s\n\t\tclient_quota off\n\t\torder_wait 1s\n\t\torder_hold 200ms\n\t\tabandon_after 1s"))
	fx := s.Fixtures(t)
	// The token and two orders spend the queue's share of the window (4
	// less the watch reserve).
	for i := range 2 {
		if status, _, body := post(t, e.URL+orderPath, buyerOrder(fx, i), "Accept", "application/json"); status != 200 {
			t.Fatalf("order %d: %d %s", i, status, body)
		}
	}
	status, hdr, body := post(t, e.URL+orderPath, buyerOrder(fx, 2), "Accept", "application/json")
	var m map[string]any
	json.Unmarshal(body, &m)
	if status != http.StatusTooManyRequests || m["error"] != "order_queued" || m["position"] != 1.0 || hdr.Get("Retry-After") == "" {
		t.Fatalf("order past order_wait: %d %v %s", status, hdr, body)
	}
	// A buyer who got a ticket and left: nobody follows it, so it is
	// withdrawn (abandoned) before the budget has room again.
	if status, _, body := post(t, e.URL+orderPath, buyerOrder(fx, 4), "Accept", "application/json", "Prefer", "respond-async"); status != http.StatusAccepted {
		t.Fatalf("order with a ticket: %d %s", status, body)
	}
	waitFor(t, "the unfollowed order abandoned", 15*time.Second, func() bool { return queueStats(t, e).Abandoned == 1 })
	// Past the window the budget has room again: the withdrawn and the
	// abandoned orders stay unsent, and the next one goes.
	waitFor(t, "a new window", 30*time.Second, func() bool {
		st, _, _ := post(t, e.URL+orderPath, buyerOrder(fx, 3), "Accept", "application/json")
		return st == 200
	})
	refs := orderRefs(t, s)
	if slices.Contains(refs, "buyer-02") || slices.Contains(refs, "buyer-04") || !slices.Contains(refs, "buyer-03") {
		t.Fatalf("orders created: %v; buyer-02 was withdrawn, buyer-04 abandoned", refs)
	}
	if q := queueStats(t, e); q.Withdrawn < 1 {
		t.Fatalf("queue stats %+v", q)
	}
}

// A restart keeps the line: orders queued before it keep their places
// (the sidecar restarts with order_queue off, so that the line stays
// still), and are placed in their order, each once, when a reload turns
// the queue on again.
func TestRestartWithAQueue(t *testing.T) {
	s := startSim(t)
	on := caddyfile(s, "rate_limit 3 20s\n\t\tclient_quota off\n\t\torder_queue_per_client 100\n\t\torder_hold 100ms")
	e := startEdge(t, on)
	fx := s.Fixtures(t)
	for i := range 2 {
		if status, _, body := post(t, e.URL+orderPath, buyerOrder(fx, i), "Accept", "application/json"); status != 200 {
			t.Fatalf("order %d: %d %s", i, status, body)
		}
	}
	var tickets []string
	for i := 2; i < 5; i++ {
		status, hdr, body := post(t, e.URL+orderPath, buyerOrder(fx, i), "Accept", "application/json", "Prefer", "respond-async")
		if status != http.StatusAccepted {
			t.Fatalf("order %d: %d %s", i, status, body)
		}
		tickets = append(tickets, hdr.Get("Location"))
	}
	e.Stop(t)
	e.write(strings.Replace(on, "client_quota off", "client_quota off\n\t\torder_queue off", 1))
	e = restartEdge(t, e)
	for i, loc := range tickets {
		var m map[string]any
		getJSON(t, e.URL+loc, &m)
		if m["status"] != "queued" || m["position"] != float64(i+1) {
			t.Fatalf("ticket %d after the restart: %v", i, m)
		}
	}
	e.Reload(t, on)
	for _, loc := range tickets {
		waitFor(t, "placed after the restart", time.Minute, func() bool {
			var m map[string]any
			getJSON(t, e.URL+loc, &m)
			return m["status"] == "placed"
		})
	}
	if refs, want := orderRefs(t, s), []string{"buyer-00", "buyer-01", "buyer-02", "buyer-03", "buyer-04"}; !slices.Equal(refs, want) {
		t.Fatalf("orders created: %v, want %v", refs, want)
	}
}

// An order being sent when the sidecar is killed (kill -9) may exist or
// not: after the restart its ticket answers order_unknown with the cart,
// and the order is never sent again.
func TestKilledWhileSendingIsUnknown(t *testing.T) {
	s := startSim(t)
	on := caddyfile(s, "rate_limit 30 1m\n\t\tclient_quota off\n\t\torder_hold 100ms\n\t\ttimeout 60s")
	e := startEdge(t, on)
	fx := s.Fixtures(t)
	s.Control(t, "/_sim/faults", `{"latency":"20s"}`)
	status, hdr, body := post(t, e.URL+orderPath, buyerOrder(fx, 0), "Accept", "application/json", "Prefer", "respond-async")
	if status != http.StatusAccepted {
		t.Fatalf("order: %d %s", status, body)
	}
	loc := hdr.Get("Location")
	waitFor(t, "the order's call under way", 10*time.Second, func() bool {
		var m map[string]any
		getJSON(t, e.URL+loc, &m)
		return m["status"] == "sending"
	})
	e.cmd.Process.Kill()
	<-e.done
	s.Control(t, "/_sim/faults", `{"latency":"0s"}`)
	e = restartEdge(t, e)
	resp, err := http.Get(e.URL + loc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var m map[string]any
	json.Unmarshal(b, &m)
	if resp.StatusCode != http.StatusBadGateway || m["error"] != "order_unknown" || m["status"] != "failed" ||
		!strings.Contains(fmt.Sprint(m["redirectUrl"]), "/api/1/redirect/cart") {
		t.Fatalf("ticket after the kill: %d %s", resp.StatusCode, b)
	}
	// The line is in order: a new order placed now went after anything
	// the restarted sidecar would have sent again.
	if status, _, body := post(t, e.URL+orderPath, buyerOrder(fx, 1), "Accept", "application/json"); status != 200 {
		t.Fatalf("order after the restart: %d %s", status, body)
	}
	if n := s.Counters(t).Calls["externalOrderFacade/createOrUpdateOrder"]; n != 2 {
		t.Fatalf("the simulator got %d order calls, want 2: the killed one once, and the new one", n)
	}
}
