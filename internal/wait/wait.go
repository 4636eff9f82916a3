// Package wait holds the waits that end early when told to: a sleep a
// context cuts short, and a loop that runs a function on a ticker until a
// channel closes (edge, budget, cachestore, sim).
package wait

import (
	"context"
	"time"
)

// Sleep waits d; false when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Every calls fn every d, the first time d from now, until stop is closed
// or fn returns false.
func Every(stop <-chan struct{}, d time.Duration, fn func() bool) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if !fn() {
			return
		}
	}
}
