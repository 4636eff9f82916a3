package budget

import (
	"sync"
	"time"
)

// FakeClock is a Clock that moves only when told to, for tests of this and
// other packages. Timers fire in Advance, in order of their due time, and
// Now reads the due time of the timer being fired, so callbacks see the
// instant they were scheduled for.
type FakeClock struct {
	mu      sync.Mutex
	changed *sync.Cond // broadcast when a timer is added
	now     time.Time
	pending []*fakeTimer
	seq     uint64
}

// NewFakeClock returns a fake clock reading t0.
func NewFakeClock(t0 time.Time) *FakeClock {
	c := &FakeClock{now: t0}
	c.changed = sync.NewCond(&c.mu)
	return c
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	seq  uint64 // creation order breaks ties between timers due together
	ch   chan time.Time
	f    func()
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the fake time once d has been
// advanced past.
func (c *FakeClock) After(d time.Duration) <-chan time.Time { return c.NewTimer(d).C() }

// NewTimer returns a timer firing once d has been advanced past.
func (c *FakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc arranges for f to run in Advance once d has passed. A
// non-positive d runs f at once in its own goroutine, as time.AfterFunc
// would, because the caller may hold locks f needs.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{c: c, f: f}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, firing every timer that falls due
// on the way, including timers that fired callbacks schedule within d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	for {
		i := c.nextDueLocked(target)
		if i < 0 {
			break
		}
		t := c.pending[i]
		c.removeLocked(i)
		if t.when.After(c.now) {
			c.now = t.when
		}
		if t.ch != nil {
			select {
			case t.ch <- c.now:
			default:
			}
			continue
		}
		// The callback may use the clock: run it unlocked.
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	if target.After(c.now) {
		c.now = target
	}
	c.mu.Unlock()
}

// Next returns the due time of the earliest pending timer, so a test can
// advance exactly to it; ok is false when no timer is pending.
func (c *FakeClock) Next() (due time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.pending {
		if !ok || t.when.Before(due) {
			due, ok = t.when, true
		}
	}
	return due, ok
}

// BlockedCount is the number of timers waiting to fire. A goroutine that
// sleeps on After or a Timer counts as one, and so does a Budget with
// waiters (it keeps one timer for the next instant a waiter can be served).
func (c *FakeClock) BlockedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// BlockUntil waits until at least n timers are waiting to fire, so a test
// can advance the clock only once the goroutines under test sleep on it.
func (c *FakeClock) BlockUntil(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) < n {
		c.changed.Wait()
	}
}

func (c *FakeClock) nextDueLocked(target time.Time) int {
	best := -1
	for i, t := range c.pending {
		if t.when.After(target) {
			continue
		}
		if best < 0 || t.when.Before(c.pending[best].when) ||
			(t.when.Equal(c.pending[best].when) && t.seq < c.pending[best].seq) {
			best = i
		}
	}
	return best
}

func (c *FakeClock) removeLocked(i int) {
	last := len(c.pending) - 1
	c.pending[i] = c.pending[last]
	c.pending[last] = nil
	c.pending = c.pending[:last]
}

func (c *FakeClock) indexLocked(t *fakeTimer) int {
	for i, p := range c.pending {
		if p == t {
			return i
		}
	}
	return -1
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.indexLocked(t)
	if i < 0 {
		return false
	}
	c.removeLocked(i)
	return true
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	i := c.indexLocked(t)
	if i >= 0 {
		c.removeLocked(i)
	}
	if d <= 0 {
		now := c.now
		c.mu.Unlock()
		if t.ch != nil {
			select {
			case t.ch <- now:
			default:
			}
		} else {
			go t.f()
		}
		return i >= 0
	}
	c.seq++
	t.when, t.seq = c.now.Add(d), c.seq
	c.pending = append(c.pending, t)
	c.changed.Broadcast()
	c.mu.Unlock()
	return i >= 0
}

var _ Clock = (*FakeClock)(nil)
