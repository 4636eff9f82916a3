package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/s360edge/s360edge/edge"
)

// recorder collects the events a node's handler gets.
type recorder chan edge.Event

func (r recorder) fn(ev edge.Event) { r <- ev }

// next is the next event, failing the test after 3 s.
func (r recorder) next(t *testing.T) edge.Event {
	t.Helper()
	select {
	case ev := <-r:
		return ev
	case <-time.After(3 * time.Second):
		t.Fatal("no event within 3 s")
		return edge.Event{}
	}
}

// none checks that no event arrives for a while.
func (r recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-r:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

// joinSyncsOnly leaves the nodes' EventSyncs to their joins, without the
// reconcile every heartbeat, for tests that count events; before
// Subscribe.
func joinSyncsOnly(cs ...*Cluster) {
	for _, c := range cs {
		c.syncEvery = time.Hour
	}
}

func tagged(i int) edge.Event {
	return edge.Event{Kind: edge.EventInvalidate, Tags: []string{fmt.Sprintf("product:%d", i)}, Reference: fmt.Sprint(i)}
}

func publish(t *testing.T, c *Cluster, evs ...edge.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := c.Publish(context.Background(), ev); err != nil {
			t.Fatalf("Publish(%+v): %v", ev, err)
		}
	}
}

func TestStreamDeliversInOrderAndCatchesUp(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	onePoller(t, 2*time.Second, a)
	own := make(recorder, 10)
	joinSyncsOnly(a)
	a.Subscribe(own.fn)
	if ev := own.next(t); ev.Kind != edge.EventSync || ev.Generation != 0 || ev.Setup != nil {
		t.Fatalf("first event on an empty cluster = %+v; want an empty EventSync", ev)
	}

	dir := t.TempDir()
	b := stateNode(t, r, "b", dir)
	got := make(recorder, 100)
	joinSyncsOnly(b)
	b.Subscribe(got.fn)
	if ev := got.next(t); ev.Kind != edge.EventSync {
		t.Fatalf("first event = %+v; want EventSync", ev)
	}
	publish(t, a, tagged(1), tagged(2), tagged(3))
	for i := 1; i <= 3; i++ {
		ev := got.next(t)
		if ev.Kind != edge.EventInvalidate || ev.Reference != fmt.Sprint(i) || ev.Node != "a" {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}
	own.none(t, 300*time.Millisecond) // a's own events are not handed back to it

	// b goes away; a publishes on; b's successor (same Dir) gets what it
	// missed, in order, then the EventSync of the cluster as of then.
	b.Close()
	gen := edge.Event{Kind: edge.EventGeneration, Generation: 7, Setup: []byte(`"2026-11-30T01:00:00Z"`)}
	publish(t, a, tagged(4), gen, tagged(5))
	b2 := stateNode(t, r, "b", dir)
	got2 := make(recorder, 100)
	joinSyncsOnly(b2)
	b2.Subscribe(got2.fn)
	var kinds []string
	for range 4 {
		ev := got2.next(t)
		kinds = append(kinds, string(ev.Kind)+":"+ev.Reference+fmt.Sprint(ev.Generation))
		if ev.Kind == edge.EventSync && (ev.Generation != 7 || string(ev.Setup) != string(gen.Setup)) {
			t.Fatalf("EventSync after catch-up = %+v; want generation 7 and its setup", ev)
		}
	}
	// The sync carries the cluster's reference date, the newest an
	// invalidation published: "5".
	if want := []string{"invalidate:40", "generation:7", "invalidate:50", "sync:57"}; !slices.Equal(kinds, want) {
		t.Fatalf("after restart b got %v; want %v", kinds, want)
	}
	publish(t, a, tagged(6))
	if ev := got2.next(t); ev.Reference != "6" {
		t.Fatalf("after catching up: %+v", ev)
	}
	saved, err := os.ReadFile(filepath.Join(dir, lastIDFile))
	if err != nil || !streamIDPattern.MatchString(string(saved[:len(saved)-1])) {
		t.Fatalf("saved id %q, %v", saved, err)
	}
}

func TestStreamGapSyncs(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	onePoller(t, 2*time.Second, a)
	dir := t.TempDir()
	b := stateNode(t, r, "b", dir)
	got := make(recorder, 100)
	joinSyncsOnly(b)
	b.Subscribe(got.fn)
	got.next(t) // sync
	publish(t, a, tagged(1))
	got.next(t)
	b.Close()

	publish(t, a, tagged(2), edge.Event{Kind: edge.EventGeneration, Generation: 3, Setup: []byte("s3")}, tagged(3), tagged(4))
	// Trimmed as MAXLEN does once the stream is long: events b never
	// applied are gone.
	rdb := r.client()
	defer rdb.Close()
	if err := rdb.XTrimMaxLen(context.Background(), "t:events", 1).Err(); err != nil {
		t.Fatal(err)
	}
	b2 := stateNode(t, r, "b", dir)
	got2 := make(recorder, 100)
	joinSyncsOnly(b2)
	b2.Subscribe(got2.fn)
	if ev := got2.next(t); ev.Kind != edge.EventSync || ev.Generation != 3 || string(ev.Setup) != "s3" {
		t.Fatalf("after a gap: %+v; want EventSync generation 3", ev)
	}
	got2.none(t, 300*time.Millisecond) // not the one event left before the tail
	publish(t, a, tagged(5))
	if ev := got2.next(t); ev.Reference != "5" {
		t.Fatalf("after the sync: %+v", ev)
	}
}

func TestStreamIgnoresUnreadableState(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	onePoller(t, 2*time.Second, a)
	publish(t, a, tagged(1))
	rdb := r.client()
	defer rdb.Close()
	ctx := context.Background()
	// A foreign entry in the stream, and a garbage saved id.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "t:events", Values: map[string]any{"data": "{not json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, lastIDFile), []byte("../../etc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := stateNode(t, r, "b", dir)
	got := make(recorder, 10)
	joinSyncsOnly(b)
	b.Subscribe(got.fn)
	if ev := got.next(t); ev.Kind != edge.EventSync {
		t.Fatalf("with an unreadable saved id: %+v; want EventSync", ev)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "t:events", Values: map[string]any{"data": "[]"}}).Err(); err != nil {
		t.Fatal(err)
	}
	publish(t, a, tagged(2))
	if ev := got.next(t); ev.Reference != "2" {
		t.Fatalf("after an unreadable event: %+v", ev)
	}
}

func TestStreamIDLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"1-0", "2-0", true},
		{"2-0", "1-0", false},
		{"5-1", "5-2", true},
		{"5-2", "5-2", false},
		{"9-0", "10-0", true}, // numeric, not lexical
		{"0-0", "1700000-0", true},
	} {
		t.Run(tc.a+"<"+tc.b, func(t *testing.T) {
			if got := streamIDLess(tc.a, tc.b); got != tc.less {
				t.Fatalf("streamIDLess = %v", got)
			}
		})
	}
}

func TestStreamPurgeFromAnyNode(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	onePoller(t, 2*time.Second, a)
	b := stateNode(t, r, "b", "")
	got := make(recorder, 10)
	joinSyncsOnly(a)
	a.Subscribe(got.fn)
	got.next(t) // sync
	ctx := context.Background()
	if err := b.Publish(ctx, tagged(1)); !errors.Is(err, ErrNotPoller) {
		t.Fatalf("an invalidation from a node that does not poll: %v; want ErrNotPoller", err)
	}
	// An operator's purge is not the poller's: any node publishes it.
	purge := edge.Event{Kind: edge.EventPurge, Class: "catalog", Soft: true}
	if err := b.Publish(ctx, purge); err != nil {
		t.Fatalf("a purge from a node that does not poll: %v", err)
	}
	if ev := got.next(t); ev.Kind != edge.EventPurge || ev.Class != "catalog" || !ev.Soft || ev.Node != "b" {
		t.Fatalf("the poller got %+v", ev)
	}
	if err := a.Publish(ctx, edge.Event{Kind: edge.EventSync, Generation: 9}); err == nil {
		t.Fatal("publishing an EventSync: no error")
	}
	got.none(t, 200*time.Millisecond)
}

// The cluster's state is written by the same script as the event: a
// generation change sets gen and setup, only while the cluster's setup is
// the one it was seen from (or none); one to the setup the cluster has
// already is done without an event; an invalidation moves the reference
// date forward only, and only from the poller.
func TestPublishWritesTheStateWithTheEvent(t *testing.T) {
	r := startRedisB(t)
	a := stateNode(t, r, "a", "")
	b := stateNode(t, r, "b", "")
	poller := onePoller(t, 2*time.Second, a, b)
	other := a
	if poller == a {
		other = b
	}
	rdb := r.client()
	defer rdb.Close()
	ctx := context.Background()
	state := func() (gen, setup, ref string, events int64) {
		gen, _ = rdb.Get(ctx, "t:gen").Result()
		setup, _ = rdb.Get(ctx, "t:setup").Result()
		ref, _ = rdb.Get(ctx, "t:ref").Result()
		events, _ = rdb.XLen(ctx, "t:events").Result()
		return
	}
	change := func(gen uint64, setup, from string) edge.Event {
		ev := edge.Event{Kind: edge.EventGeneration, Generation: gen, Setup: []byte(setup)}
		if from != "" {
			ev.From = []byte(from)
		}
		return ev
	}
	// Any node's change lands on an empty cluster.
	if err := other.Publish(ctx, change(11, "s1", "")); err != nil {
		t.Fatalf("the first change, from a node that does not poll: %v", err)
	}
	if g, s, _, n := state(); g != "11" || s != "s1" || n != 1 {
		t.Fatalf("after the first change: gen %q setup %q, %d events", g, s, n)
	}
	// Seen from an older value (a retry that came too late): refused,
	// nothing written.
	if err := poller.Publish(ctx, change(12, "s2", "s1")); err != nil {
		t.Fatal(err)
	}
	for _, late := range []edge.Event{change(13, "s3", "s1"), change(13, "s3", "")} {
		if err := other.Publish(ctx, late); !errors.Is(err, ErrSuperseded) || !errors.Is(err, edge.ErrRefusedChange) {
			t.Fatalf("a change seen from %q when the cluster is at s2: %v; want ErrSuperseded", late.From, err)
		}
	}
	// The cluster has that value already: done, no event.
	if err := other.Publish(ctx, change(12, "s2", "s1")); err != nil {
		t.Fatalf("a change to the cluster's own value: %v", err)
	}
	if g, s, _, n := state(); g != "12" || s != "s2" || n != 2 {
		t.Fatalf("after the refusals: gen %q setup %q, %d events; want 12, s2, 2", g, s, n)
	}
	// The reference date goes forward only; the events carry theirs.
	refs := []string{"2026-12-07T10:00:02.000Z", "2026-12-07T10:00:01.000Z"}
	for _, ref := range refs {
		publish(t, poller, edge.Event{Kind: edge.EventInvalidate, Tags: []string{"product:1"}, Reference: ref})
	}
	if _, _, ref, n := state(); ref != refs[0] || n != 4 {
		t.Fatalf("reference date %q, %d events; want %q, 4", ref, n, refs[0])
	}
	if err := other.Publish(ctx, edge.Event{Kind: edge.EventInvalidate, Tags: []string{"x"}, Reference: "2026-12-07T11:00:00.000Z"}); !errors.Is(err, ErrNotPoller) || !errors.Is(err, edge.ErrRefusedChange) {
		t.Fatalf("an invalidation from a node that does not poll: %v; want ErrNotPoller", err)
	}
	if _, _, ref, _ := state(); ref != refs[0] {
		t.Fatalf("a refused invalidation moved the reference date to %q", ref)
	}
	// The stream's events do not carry the From.
	ms, _ := rdb.XRange(ctx, "t:events", "-", "+").Result()
	if d, _ := ms[1].Values["data"].(string); strings.Contains(d, `"from"`) {
		t.Fatalf("an event carries its From: %s", d)
	}
}

// A node reconciles with the cluster's state every heartbeat, not only when
// it joins: a state it has no event for (lost, or written by a Redis
// restored from elsewhere) reaches it within a heartbeat or two.
func TestReconcileEveryHeartbeat(t *testing.T) {
	r := startRedisB(t)
	b := stateNode(t, r, "b", "")
	got := make(recorder, 1000)
	b.Subscribe(got.fn)
	if ev := got.next(t); ev.Kind != edge.EventSync || ev.Generation != 0 {
		t.Fatalf("first event %+v; want the empty cluster's EventSync", ev)
	}
	rdb := r.client()
	defer rdb.Close()
	ctx := context.Background()
	for k, v := range map[string]string{"t:gen": "5", "t:setup": "s5", "t:ref": "2026-12-07T10:00:00.000Z"} {
		if err := rdb.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	written := time.Now()
	for {
		ev := got.next(t)
		if ev.Kind != edge.EventSync {
			t.Fatalf("unexpected %+v", ev)
		}
		if ev.Generation == 5 {
			if string(ev.Setup) != "s5" || ev.Reference != "2026-12-07T10:00:00.000Z" {
				t.Fatalf("reconcile delivered %+v", ev)
			}
			break
		}
	}
	// Heartbeat 100 ms; a loaded machine may add a few.
	if d := time.Since(written); d > time.Second {
		t.Fatalf("the state reached the node after %v, want about a heartbeat (100 ms)", d)
	}
}

// A sync read before an event this node published is not delivered: it
// would take the node back behind its own change.
func TestSyncBehindOwnPublishIsNotDelivered(t *testing.T) {
	c := &Cluster{}
	var got []edge.Event
	fn := func(ev edge.Event) { got = append(got, ev) }
	c.deliverSync(fn, edge.Event{Kind: edge.EventSync, Generation: 1}, "5-0")
	c.published("7-0")
	c.deliverSync(fn, edge.Event{Kind: edge.EventSync, Generation: 2}, "6-9")
	c.deliverSync(fn, edge.Event{Kind: edge.EventSync, Generation: 3}, "7-0")
	c.published("") // Redis restarted: forgotten
	c.deliverSync(fn, edge.Event{Kind: edge.EventSync, Generation: 4}, "0-0")
	var gens []uint64
	for _, ev := range got {
		gens = append(gens, ev.Generation)
	}
	if !slices.Equal(gens, []uint64{1, 3, 4}) {
		t.Fatalf("delivered syncs %v; want 1, 3 and 4 (2 was read before the node's own event)", gens)
	}
}
