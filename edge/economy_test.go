package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
	"github.com/s360edge/s360edge/s360"
	"github.com/s360edge/s360edge/upstream"
)

// These tests run the edge with the real budget and a real Badger store in
// a synctest bubble. S-360 is a handler called in-process by the client's
// transport, so that fake time advances only when everything waits.

// s360Stub answers by method and counts the calls that reached it.
type s360Stub struct {
	mu      sync.Mutex
	calls   map[string]int
	answers map[string]http.HandlerFunc
}

func newStub() *s360Stub {
	return &s360Stub{calls: map[string]int{}, answers: map[string]http.HandlerFunc{}}
}

func (s *s360Stub) on(method string, h http.HandlerFunc) {
	s.mu.Lock()
	s.answers[method] = h
	s.mu.Unlock()
}

func (s *s360Stub) count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// transport serves requests with the stub; refused makes every call fail
// to connect, before anything reaches S-360.
func (s *s360Stub) transport(refused *bool) http.RoundTripper {
	return roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == upstream.AuthPath {
			rec := httptest.NewRecorder()
			io.WriteString(rec, `{"token":"t"}`)
			return rec.Result(), nil
		}
		method := path.Base(r.URL.Path)
		s.mu.Lock()
		s.calls[method]++ // attempts, sent or not
		h := s.answers[method]
		s.mu.Unlock()
		if refused != nil && *refused {
			return nil, syscall.ECONNREFUSED
		}
		// The request left, as net/http's transport reports it.
		if tr := httptrace.ContextClientTrace(r.Context()); tr != nil && tr.WroteHeaders != nil {
			tr.WroteHeaders()
		}
		rec := httptest.NewRecorder()
		if h == nil {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(rec, `{"statusCode":"success","echo":%s}`, b)
		} else {
			h(rec, r)
		}
		if err := r.Context().Err(); err != nil {
			return nil, err
		}
		return rec.Result(), nil
	})
}

type economy struct {
	e      *Edge
	client *upstream.Client
	stub   *s360Stub
}

// openEconomy opens an edge on dir with a real budget (default limits and
// floors) and an upstream client with a 5 s timeout.
func openEconomy(t *testing.T, dir string, stub *s360Stub, refused *bool) *economy {
	t.Helper()
	e, err := Open(Options{Dir: dir, Institution: "mosa", Gate: budget.New(budget.Config{})})
	if err != nil {
		t.Fatal(err)
	}
	c := upstream.New(upstream.Config{BaseURL: "http://s360.invalid", Secret: "s", Timeout: 5 * time.Second,
		Transport: stub.transport(refused), Gate: e})
	e.Attach(c)
	return &economy{e: e, client: c, stub: stub}
}

func (v *economy) serve(t *testing.T, call s360.Call, body string) Result {
	t.Helper()
	c, err := s360.Canonical([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return v.e.Serve(context.Background(), v.client, call, c, "")
}

func floorWait(t *testing.T, r Result) time.Duration {
	t.Helper()
	var fe *FloorError
	if !errors.As(r.Err, &fe) {
		t.Fatalf("want a FloorError, got %+v", r)
	}
	return fe.Wait
}

func TestFloorCountsAttempts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   http.HandlerFunc
		refused  bool
		wantCall int
	}{
		{"5xx", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, false, 1},
		{"in_progress", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"statusCode":"in_progress"}`) }, false, 1},
		{"509", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(509) }, false, 1},
		{"timeout after sending", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, false, 1},
		{"connection refused: not sent", nil, true, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stub := newStub()
				stub.on("getCatalogDetailed", tc.answer)
				refused := tc.refused
				v := openEconomy(t, t.TempDir(), stub, &refused)
				defer v.e.Close()
				var last Result
				for range 6 {
					last = v.serve(t, catalog, `{}`)
				}
				if n := stub.count("getCatalogDetailed"); n != tc.wantCall {
					t.Fatalf("6 requests made %d upstream calls, want %d", n, tc.wantCall)
				}
				if tc.wantCall == 1 {
					if w := floorWait(t, last); w <= 9*time.Minute || w > 10*time.Minute {
						t.Fatalf("floor wait %v, want just under 10m", w)
					}
				}
			})
		})
	}
}

func TestFloorSurvivesReopen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		stub := newStub()
		v := openEconomy(t, dir, stub, nil)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss; stored", "echo")
		if _, err := v.e.Store().PurgeAll(); err != nil { // an operator's hard purge
			t.Fatal(err)
		}
		v.e.Close()

		time.Sleep(4 * time.Minute)
		v = openEconomy(t, dir, stub, nil)
		defer v.e.Close()
		if st := v.e.Gate().(*budget.Budget).Stats(); st.FloorKeys != 1 {
			t.Fatalf("floor keys after reopen: %d, want 1", st.FloorKeys)
		}
		if w := floorWait(t, v.serve(t, catalog, `{}`)); w != 6*time.Minute {
			t.Fatalf("floor wait after reopen %v, want 6m", w)
		}
		time.Sleep(6 * time.Minute)
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss; stored", "echo")
		if n := stub.count("getCatalogDetailed"); n != 2 {
			t.Fatalf("%d upstream calls, want 2", n)
		}
	})
}

var (
	setupCall = s360.Call{Service: "catalogService", Version: "v1_33", Method: "getLastSetupUpdate", Class: s360.Uncached}
	aliveCall = s360.Call{Service: "catalogService", Version: "v1_33", Method: "isCatalogServiceAlive", Class: s360.Uncached}
	feedCall  = s360.Call{Service: "availabilityService", Version: "v1_33", Method: "getUpdatedAvailabilities", Class: s360.Uncached}
)

func TestFeedCopy(t *testing.T) {
	t.Run("sixty identical calls make one", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			v := openEconomy(t, t.TempDir(), newStub(), nil)
			defer v.e.Close()
			for _, call := range []s360.Call{setupCall, aliveCall, feedCall} {
				expect(t, v.serve(t, call, `{}`), "s360edge; fwd=miss; stored", "echo")
				for range 59 {
					time.Sleep(500 * time.Millisecond)
					r := v.serve(t, call, `{}`)
					if !strings.HasSuffix(r.CacheStatus, "detail=feed-copy") || r.Entry == nil {
						t.Fatalf("%s: %q", call.Method, r.CacheStatus)
					}
				}
				if n := v.stub.count(call.Method); n != 1 {
					t.Fatalf("%s: 60 calls made %d upstream", call.Method, n)
				}
			}
			time.Sleep(time.Minute)
			expect(t, v.serve(t, feedCall, `{}`), "s360edge; fwd=miss; stored", "echo")
			if n := v.stub.count(feedCall.Method); n != 2 {
				t.Fatalf("after the copy expired: %d calls, want 2", n)
			}
		})
	})
	t.Run("a refused feed call is not repeated within the floor", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stub := newStub()
			stub.on(feedCall.Method, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(509) })
			v := openEconomy(t, t.TempDir(), stub, nil)
			defer v.e.Close()
			if r := v.serve(t, feedCall, `{"productIds":[1]}`); r.Resp == nil || r.Resp.Status != 509 {
				t.Fatalf("first call: %+v", r)
			}
			if w := floorWait(t, v.serve(t, feedCall, `{"productIds":[1]}`)); w != time.Minute {
				t.Fatalf("floor %v, want 1m", w)
			}
			if n := stub.count(feedCall.Method); n != 1 {
				t.Fatalf("%d upstream calls, want 1", n)
			}
		})
	})
	t.Run("getLastSetupUpdate is answered from the setup poll", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stub := newStub()
			stub.on(setupCall.Method, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"statusCode":"success","lastSetupUpdate":"2026-11-29T10:00:00Z"}`)
			})
			v := openEconomy(t, t.TempDir(), stub, nil)
			defer v.e.Close()
			mustPoll(t, v.e.pollSetup)
			for range 60 {
				expect(t, v.serve(t, setupCall, `{}`), "s360edge; hit; ttl=60; detail=feed-copy", "2026-11-29T10:00:00Z")
			}
			if n := stub.count(setupCall.Method); n != 1 {
				t.Fatalf("a poll and 60 website calls made %d upstream calls, want 1", n)
			}
		})
	})
}

func TestSoftPurgeServesPurgedThenRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newStub()
		edition := "v1"
		var mu sync.Mutex
		stub.on("getCatalogDetailed", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(w, `{"statusCode":"success","edition":%q}`, edition)
		})
		v := openEconomy(t, t.TempDir(), stub, nil)
		defer v.e.Close()
		expect(t, v.serve(t, catalog, `{}`), "s360edge; fwd=miss; stored", "v1")
		mu.Lock()
		edition = "v2"
		mu.Unlock()
		if n, err := v.e.Store().SoftPurgeClass(cachestore.Catalog); n != 1 || err != nil {
			t.Fatalf("soft purge: %d, %v", n, err)
		}
		v.e.RefreshPurged() // as the admin API does
		// Within the floor: the purged entry answers, the refresh waits.
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=0; detail=purged", "v1")
		synctest.Wait()
		if n := stub.count("getCatalogDetailed"); n != 1 {
			t.Fatalf("the refresh did not wait for the floor: %d calls", n)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if n := stub.count("getCatalogDetailed"); n != 2 {
			t.Fatalf("no refresh once the floor passed: %d calls", n)
		}
		time.Sleep(10 * time.Minute) // no more refreshes once refreshed
		synctest.Wait()
		if n := stub.count("getCatalogDetailed"); n != 2 {
			t.Fatalf("refreshed again: %d calls", n)
		}
		r := v.serve(t, catalog, `{}`)
		if !strings.HasPrefix(r.CacheStatus, "s360edge; hit; ttl=85800") || !strings.Contains(string(r.Entry.Body), "v2") {
			t.Fatalf("after the refresh: %q %s", r.CacheStatus, r.Entry.Body)
		}
	})
}

func TestStaleTimeoutServesStaleWhileTheFetchGoesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := newStub()
		v := openEconomy(t, t.TempDir(), stub, nil)
		defer v.e.Close()
		// Short freshness: Badger's tickers make long fake sleeps slow.
		v.e.Reconfigure(Settings{Policy: Policy{MaxAge: map[string]time.Duration{"availabilityService/*": time.Minute}, StaleWhileRevalidate: time.Second}, Institution: "mosa"})
		expect(t, v.serve(t, avail, `{"performanceIds":[1]}`), "s360edge; fwd=miss; stored", "echo")
		// Past max_age and stale_while_revalidate, within stale_if_error
		// (24h): a request must call S-360.
		time.Sleep(2 * time.Minute)
		stub.on(avail.Method, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(4 * time.Second) // slow, within the 5 s timeout
			io.WriteString(w, `{"statusCode":"success","new":true}`)
		})
		start := time.Now()
		r := v.serve(t, avail, `{"performanceIds":[1]}`)
		expect(t, r, "s360edge; hit; ttl=-62; detail=stale-timeout", "echo")
		expectFetch(t, r, Late)
		if d := time.Since(start); d != DefaultStaleTimeout {
			t.Fatalf("the stale answer came after %v, want %v", d, DefaultStaleTimeout)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		r = v.serve(t, avail, `{"performanceIds":[1]}`)
		if !strings.Contains(string(r.Entry.Body), `"new":true`) || !r.Hit {
			t.Fatalf("the background fetch did not store its answer: %q %s", r.CacheStatus, r.Entry.Body)
		}
	})
}

// catalogStub answers getPOSConfig (posId 9) and a catalog of products 101
// and 102, and reports the products in changed from getUpdatedAvailabilities,
// with S-360's clock ahead of ours by skew in its Date header.
func catalogStub(changed string, skew time.Duration) *s360Stub {
	stub := newStub()
	stub.on("getPOSConfig", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"statusCode":"success","posConfigData":{"posId":9}}`)
	})
	stub.on("getCatalogDetailed", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"statusCode":"success","catalogData":{"seasons":[{"products":[{"id":101},{"id":102}]}]}}`)
	})
	stub.on("getUpdatedAvailabilities", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		fmt.Fprintf(w, `{"statusCode":"success","availabilityUpdateData":[%s]}`, changed)
	})
	return stub
}

func TestAvailabilityInvalidation(t *testing.T) {
	t.Run("an answer asked for before a change is stored stale", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			stub := catalogStub(`{"productId":101}`, 0)
			release := make(chan struct{})
			stub.on(productAva.Method, func(w http.ResponseWriter, r *http.Request) {
				<-release
				io.WriteString(w, `{"statusCode":"success","remaining":5}`)
			})
			v := openEconomy(t, t.TempDir(), stub, nil)
			defer v.e.Close()
			v.serve(t, posConfig, `{}`)
			v.serve(t, catalog, `{}`)
			done := make(chan Result)
			go func() { done <- v.serve(t, productAva, `{"productIds":[101]}`) }()
			synctest.Wait() // the call is out
			mustPoll(t, v.e.pollUpdates)
			close(release)
			<-done
			expect(t, v.serve(t, productAva, `{"productIds":[101]}`), "s360edge; hit; ttl=0; detail=invalidated", "remaining")
		})
	})
	t.Run("untagged entries are invalidated on any change", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			v := openEconomy(t, t.TempDir(), catalogStub(`{"productId":101}`, 0), nil)
			defer v.e.Close()
			v.serve(t, posConfig, `{}`)
			v.serve(t, catalog, `{}`)
			v.serve(t, productAva, `{"passId":7}`)
			v.serve(t, productAva, `{"productIds":[102]}`)
			mustPoll(t, v.e.pollUpdates)
			key := func(body string) string { return s360.Key("mosa", productAva, []byte(body)) }
			if ent, err := v.e.Store().Get(key(`{"passId":7}`)); err != nil || cachestore.Marked(ent.Tags) != cachestore.InvalidatedTag {
				t.Fatalf("the untagged entry was not invalidated by a change: %v", err)
			}
			if ent, err := v.e.Store().Get(key(`{"productIds":[102]}`)); err != nil || cachestore.Marked(ent.Tags) != "" {
				t.Fatalf("an unchanged product's entry was invalidated: %v", err)
			}
		})
	})
	t.Run("referenceDate comes from S-360's Date header", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			v := openEconomy(t, t.TempDir(), catalogStub("", time.Hour), nil)
			defer v.e.Close()
			v.serve(t, posConfig, `{}`)
			v.serve(t, catalog, `{}`)
			mustPoll(t, v.e.pollUpdates)
			want := time.Now().Add(time.Hour).UTC().Format(refDateLayout)
			if ref, _ := v.e.Store().GetMeta(metaUpdatesRef); string(ref) != want {
				t.Fatalf("reference date %s, want S-360's %s", ref, want)
			}
		})
	})
}

func TestSetupChangeAfterReopenWaitsForTheFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		stub := newStub()
		var mu sync.Mutex
		setup := "a"
		stub.on(setupCall.Method, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(w, `{"statusCode":"success","lastSetupUpdate":%q}`, setup)
		})
		v := openEconomy(t, dir, stub, nil)
		mustPoll(t, v.e.pollSetup)
		v.serve(t, catalog, `{}`)
		v.e.Close()

		time.Sleep(time.Minute)
		mu.Lock()
		setup = "b"
		mu.Unlock()
		v = openEconomy(t, dir, stub, nil)
		defer v.e.Close()
		mustPoll(t, v.e.pollSetup)
		synctest.Wait() // the refresh-ahead met the floor
		if n := stub.count("getCatalogDetailed"); n != 1 {
			t.Fatalf("a setup change after a restart made %d catalog calls within the floor, want 1", n)
		}
		expect(t, v.serve(t, catalog, `{}`), "s360edge; hit; ttl=86340; detail=generation", "echo")
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		if n := stub.count("getCatalogDetailed"); n != 2 {
			t.Fatalf("no refresh once the floor passed: %d catalog calls", n)
		}
	})
}

// TestFairShareKeepsABuyerServedThroughAFlood: an abusive client floods the
// edge with distinct availability requests (each one a miss) from one
// address, while a buyer browses from another. With the default budget
// (150 calls a minute, clients sharing it fairly) the buyer gets every
// answer, and sees a stock change as soon as the watcher reports it; the
// abuser gets what the buyer leaves of the window, never the buyer's
// share.
func TestFairShareKeepsABuyerServedThroughAFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stub := catalogStub("", 0)
		var mu sync.Mutex
		remaining := 5
		var abused []time.Time // when the abuser's calls reached S-360
		stub.on(productAva.Method, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(w, `{"statusCode":"success","remaining":%d}`, remaining)
		})
		stub.on(avail.Method, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			abused = append(abused, time.Now())
			mu.Unlock()
			io.WriteString(w, `{"statusCode":"success"}`)
		})
		v := openEconomy(t, t.TempDir(), stub, nil)
		defer v.e.Close()
		serveAs := func(ip string, call s360.Call, body string) Result {
			c, err := s360.Canonical([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			return v.e.Serve(context.Background(), v.client, call, c, ip)
		}
		const buyer, abuser = "198.51.100.7", "203.0.113.66"
		browse := func(visit int) string {
			t.Helper()
			var stock string
			for _, p := range []struct {
				call s360.Call
				body string
			}{
				{posConfig, `{}`}, {catalog, `{}`},
				{productAva, `{"productIds":[101]}`},
				{productAva, fmt.Sprintf(`{"productIds":[102],"visit":%d}`, visit)}, // a miss each visit
			} {
				r := serveAs(buyer, p.call, p.body)
				if r.Err != nil || r.Entry == nil {
					t.Fatalf("visit %d, %s %s: %q %v", visit, p.call.Method, p.body, r.CacheStatus, r.Err)
				}
				if p.body == `{"productIds":[101]}` {
					stock = string(r.Entry.Body)
				}
			}
			return stock
		}
		browse(0)

		// The flood: 8 connections, a distinct body every 250 ms each.
		stop := make(chan struct{})
		var refused atomic.Int64
		var wg sync.WaitGroup
		for c := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if r := serveAs(abuser, avail, fmt.Sprintf(`{"performanceIds":[%d]}`, c*1_000_000+i)); errors.Is(r.Err, budget.ErrClientQuota) {
						refused.Add(1)
					}
					time.Sleep(250 * time.Millisecond)
				}
			})
		}
		for visit := 1; visit <= 24; visit++ { // a page every 5 s for 2 minutes
			time.Sleep(5 * time.Second)
			if visit == 12 {
				mu.Lock()
				remaining = 3
				mu.Unlock()
				stub.on("getUpdatedAvailabilities", func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, `{"statusCode":"success","availabilityUpdateData":[{"productId":101}]}`)
				})
				mustPoll(t, v.e.pollUpdates)
			}
			stock := browse(visit)
			if changed := strings.Contains(stock, `"remaining":3`); changed != (visit >= 12) {
				t.Fatalf("visit %d: the buyer sees %s", visit, stock)
			}
		}
		close(stop)
		wg.Wait()

		// The buyer was active throughout: the abuser never had more than
		// its share (140 after the reserves, halved) in any minute.
		mu.Lock()
		defer mu.Unlock()
		most := 0
		for i, at := range abused {
			n := 0
			for _, b := range abused[i:] {
				if b.Sub(at) >= time.Minute {
					break
				}
				n++
			}
			most = max(most, n)
		}
		if most == 0 || most > 70 || refused.Load() == 0 {
			t.Fatalf("the abuser made %d calls, at most %d in a minute, and was refused %d times for its share", len(abused), most, refused.Load())
		}
		t.Logf("abuser: %d calls reached S-360 over 2 minutes, at most %d in a minute; %d refused for its share", len(abused), most, refused.Load())
	})
}
