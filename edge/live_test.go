package edge

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// liveRecorder is a Live that follows some products and records what it
// is told, as "changed 101 102" and "fresh 101 <method> <request> <answer>".
type liveRecorder struct {
	mu      sync.Mutex
	follows map[string]bool
	heard   []string
}

func (l *liveRecorder) Changed(products []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heard = append(l.heard, "changed "+strings.Join(products, " "))
}

func (l *liveRecorder) Listening(p string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.follows[p]
}

func (l *liveRecorder) Fresh(products []string, method string, request, answer []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.heard = append(l.heard, fmt.Sprintf("fresh %s %s %s %s", strings.Join(products, " "), method, request, answer))
}

// take returns what was heard since the last take.
func (l *liveRecorder) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.heard
	l.heard = nil
	return h
}

// The live streams hear every product the feed reports (from this node's
// poll and from another node's event alike), and then the fresh answers
// stored about the products someone follows, within LiveFreshFor only.
func TestLiveHearsChangesThenFreshAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newWatchFake()
		f.products = 3
		v := newWatchEnv(t, f, "")
		l := &liveRecorder{follows: map[string]bool{"101": true, "102": true}}
		v.e.AttachLive(l)
		v.serve(t, posConfig, `{}`)
		v.serve(t, catalog, `{}`)
		// Canonical bodies (keys sorted), as the requests the fresh answers name.
		perf101 := `{"performanceIds":[1011],"pointOfSalesId":9}` // product 101's performance
		perf102 := `{"performanceIds":[1021],"pointOfSalesId":9}`
		perf103 := `{"performanceIds":[1031],"pointOfSalesId":9}`
		byEvent := `{"eventIds":[5101],"pointOfSalesId":9}` // product 101's event
		for _, b := range []string{perf101, perf102, perf103, byEvent} {
			v.serve(t, avail, b)
		}
		mustPoll(t, v.e.pollUpdates) // first poll ever: nothing changed
		if h := l.take(); len(h) != 0 {
			t.Fatalf("heard %q before any change", h)
		}
		const method = "availabilityService/getEventAvailability"
		fresh := func(product, body string) string {
			return fmt.Sprintf(`fresh %s %s %s {"statusCode":"success","echo":%s}`, product, method, body, body)
		}

		time.Sleep(time.Minute)
		f.set(func(f *watchFake) { f.updated["101"] = true })
		mustPoll(t, v.e.pollUpdates)
		if h := l.take(); !slices.Equal(h, []string{"changed 101"}) {
			t.Fatalf("after 101 changed: heard %q, want only 101's change", h)
		}
		v.serve(t, avail, perf102) // a hit: 102 did not change
		v.serve(t, avail, perf101) // refetched: its answer goes to 101's followers
		v.serve(t, avail, perf101) // a hit now: nothing new
		v.serve(t, avail, byEvent)
		if h, want := l.take(), []string{fresh("101", perf101), fresh("101", byEvent)}; !slices.Equal(h, want) {
			t.Fatalf("after the refetches: heard\n%q\nwant\n%q", h, want)
		}

		// Two products in one invalidation (another node's event): each
		// fresh answer goes to its own product's followers, as the
		// cached catalog tells its performances apart.
		time.Sleep(time.Minute)
		v.e.applyEvent(Event{Kind: EventInvalidate, Tags: []string{"availability:untagged", "event:101", "event:102", "event:5101", "event:5102",
			"performance:1011", "performance:1012", "performance:1021", "performance:1022", "product:101", "product:102"}})
		if h := l.take(); !slices.Equal(h, []string{"changed 101 102"}) {
			t.Fatalf("another node's event: heard %q, want the change of 101 and 102", h)
		}
		v.serve(t, avail, perf102)
		if h, want := l.take(), []string{fresh("102", perf102)}; !slices.Equal(h, want) {
			t.Fatalf("102's refetch: heard\n%q\nwant\n%q", h, want)
		}

		// A product nobody follows is told of, but its answers are not
		// looked for; past LiveFreshFor, a fresh answer is no news of the
		// change.
		time.Sleep(time.Minute)
		f.set(func(f *watchFake) { f.updated["102"] = true; f.updated["103"] = true })
		mustPoll(t, v.e.pollUpdates)
		if h := l.take(); !slices.Equal(h, []string{"changed 101 102 103"}) { // the fake reports 101 ever since
			t.Fatalf("102 and 103 changed: heard %q", h)
		}
		v.serve(t, avail, perf103)
		if h := l.take(); len(h) != 0 {
			t.Fatalf("a product nobody follows: heard %q", h)
		}
		time.Sleep(LiveFreshFor)
		v.serve(t, avail, perf102) // stale by now, refetched too late
		if h := l.take(); len(h) != 0 {
			t.Fatalf("a fresh answer %s after the change: heard %q", LiveFreshFor, h)
		}

		v.e.DetachLive(l)
		v.e.applyEvent(Event{Kind: EventInvalidate, Tags: []string{"product:101"}})
		if h := l.take(); len(h) != 0 {
			t.Fatalf("detached, heard %q", h)
		}
	})
}
