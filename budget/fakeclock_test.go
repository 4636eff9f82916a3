package budget

import (
	"sync"
	"testing"
	"time"
)

func TestFakeClockFiresInOrderAtTheirInstant(t *testing.T) {
	c := NewFakeClock(t0)
	var mu sync.Mutex
	var got []string
	note := func(s string) {
		mu.Lock()
		got = append(got, s+"@"+c.Now().Sub(t0).String())
		mu.Unlock()
	}
	c.AfterFunc(3*time.Second, func() { note("c") })
	c.AfterFunc(time.Second, func() {
		note("a")
		c.AfterFunc(time.Second, func() { note("a2") }) // due within the same Advance
	})
	c.AfterFunc(2*time.Second, func() { note("b1") })
	c.AfterFunc(2*time.Second, func() { note("b2") })
	stopped := c.AfterFunc(time.Second, func() { note("stopped") })
	moved := c.AfterFunc(time.Second, func() { note("moved") })
	ch := c.After(2500 * time.Millisecond)

	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop of a pending timer")
	}
	if !moved.Reset(10 * time.Second) {
		t.Fatal("Reset of a pending timer")
	}
	if due, ok := c.Next(); !ok || !due.Equal(t0.Add(time.Second)) {
		t.Fatalf("Next = %v %v", due, ok)
	}
	if n := c.BlockedCount(); n != 6 {
		t.Fatalf("BlockedCount = %d", n)
	}
	c.Advance(2500*time.Millisecond - time.Nanosecond)
	if len(ch) != 0 {
		t.Fatal("After fired early")
	}
	c.Advance(5 * time.Second)
	want := []string{"a@1s", "b1@2s", "b2@2s", "a2@2s", "c@3s"}
	if len(got) != len(want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fired %v, want %v", got, want)
		}
	}
	if at := <-ch; !at.Equal(t0.Add(2500 * time.Millisecond)) {
		t.Fatalf("After delivered %v", at)
	}
	if !c.Now().Equal(t0.Add(7500*time.Millisecond - time.Nanosecond)) {
		t.Fatalf("Now = %v", c.Now())
	}
	if n := c.BlockedCount(); n != 1 { // moved, due at 10s
		t.Fatalf("BlockedCount = %d", n)
	}
}

func TestFakeClockBlockUntil(t *testing.T) {
	c := NewFakeClock(t0)
	done := make(chan time.Time)
	for range 3 {
		go func() {
			tm := c.NewTimer(time.Minute)
			done <- <-tm.C()
		}()
	}
	c.BlockUntil(3)
	c.Advance(time.Minute)
	for range 3 {
		if at := <-done; !at.Equal(t0.Add(time.Minute)) {
			t.Fatalf("fired at %v", at)
		}
	}
	if _, ok := c.Next(); ok {
		t.Fatal("timers left")
	}

	// Non-positive durations fire at once, as the time package does.
	<-c.After(0)
	fired := make(chan struct{})
	c.AfterFunc(-time.Second, func() { close(fired) })
	<-fired
}
