package budget

import "time"

// Clock is the time source of a Budget. It is injected so that tests run
// on a FakeClock, without sleeps.
type Clock interface {
	Now() time.Time
	// After is like time.After. With the real clock the timer is not
	// released before it fires: use NewTimer in waits that may be abandoned.
	After(d time.Duration) <-chan time.Time
	// NewTimer is like time.NewTimer.
	NewTimer(d time.Duration) Timer
	// AfterFunc is like time.AfterFunc: f runs in its own goroutine with
	// the real clock, and in the goroutine calling FakeClock.Advance with
	// the fake one.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer made by a Clock.
type Timer interface {
	// C is the channel the time is sent on; nil for AfterFunc timers.
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// RealClock returns the wall clock.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{time.AfterFunc(d, f)}
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
