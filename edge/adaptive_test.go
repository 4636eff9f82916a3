package edge

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/upstream"
)

// The learned limit survives a restart: it is in the store (Badger on
// disk), and the next edge's budget starts from it.
func TestLearnedLimitPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := budget.Config{Calls: 150, Window: time.Minute}
	synctest.Test(t, func(t *testing.T) {
		g := budget.New(cfg)
		e, err := Open(Options{Dir: dir, Institution: "mosa", Gate: g})
		if err != nil {
			t.Fatal(err)
		}
		for range 80 {
			if err := g.AcquireCall(context.Background(), budget.Call{Priority: budget.Order}); err != nil {
				t.Fatal(err)
			}
			g.SuccessCall(budget.Call{Priority: budget.Order})
		}
		g.PushbackCall(budget.Call{Priority: PriorityForeground, Method: "availabilityService/getEventAvailability", Key: "a"}, 0)
		g.PushbackCall(budget.Call{Priority: PriorityForeground, Method: "availabilityService/getPerformanceAvailability", Key: "b"}, 0)
		if got := g.Stats().EffectiveLimit; got != 72 {
			t.Fatalf("effective %d, want 72", got)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name string
		cfg  budget.Config
		want int
	}{
		{"restored", cfg, 72},
		{"adaptive off ignores it", budget.Config{Calls: 150, Window: time.Minute, FixedLimit: true}, 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := budget.New(tc.cfg)
			e, err := Open(Options{Dir: dir, Institution: "mosa", Gate: g})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if got := g.Stats().EffectiveLimit; got != tc.want {
				t.Fatalf("effective limit after reopening: %d, want %d", got, tc.want)
			}
		})
	}
}

// The limits learned for methods are kept with the institution's.
func TestLearnedMethodLimitPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := budget.Config{Calls: 150, Window: time.Minute}
	const m = "availabilityService/getEventAvailability"
	synctest.Test(t, func(t *testing.T) {
		g := budget.New(cfg)
		e, err := Open(Options{Dir: dir, Institution: "mosa", Gate: g})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 60 {
			c := budget.Call{Priority: PriorityForeground, Method: m, Key: fmt.Sprint(i)}
			if err := g.AcquireCall(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			g.SuccessCall(c)
		}
		g.PushbackCall(budget.Call{Priority: PriorityForeground, Method: m, Key: "a"}, 0)
		g.PushbackCall(budget.Call{Priority: PriorityForeground, Method: m, Key: "b"}, 0)
		if s := g.Stats(); len(s.MethodLimits) != 1 || s.MethodLimits[0].Limit != 54 {
			t.Fatalf("stats %+v", s)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	})
	g := budget.New(cfg)
	e, err := Open(Options{Dir: dir, Institution: "mosa", Gate: g})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if s := g.Stats(); s.EffectiveLimit != 54 || len(s.MethodLimits) != 1 || s.MethodLimits[0].Method != m || s.MethodLimits[0].Limit != 54 {
		t.Fatalf("after reopening: %+v", s)
	}
}

// Observe pauses what was called: the call's key and method.
func TestObservePausesTheCalledKey(t *testing.T) {
	g := budget.New(budget.Config{Calls: 100, Window: time.Minute})
	e := &Edge{opts: Options{Gate: g}}
	call := func(key string) upstream.Call {
		c := upstream.CallOf(avail, "", PriorityForeground)
		c.Key = key
		return c
	}
	e.Observe(call("k1"), 509, nil)
	quick := func(c upstream.Call) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		return e.Acquire(ctx, c)
	}
	if err := quick(call("k1")); err == nil {
		t.Fatal("the refused key was not paused")
	}
	if err := quick(call("k2")); err != nil {
		t.Fatalf("another key of the method: %v", err)
	}
	s := g.Stats()
	if s.PausesByScope != (budget.ScopeCounts{Key: 1}) || s.PausedKeys != 1 {
		t.Fatalf("stats %+v", s)
	}
}
