package wait

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context: false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context: true")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Sleep with an ended context took %v", d)
	}
}

func TestEveryStopsWhenFnSaysSo(t *testing.T) {
	n := 0
	Every(make(chan struct{}), time.Millisecond, func() bool {
		n++
		return n < 3
	})
	if n != 3 {
		t.Errorf("fn ran %d times, want 3", n)
	}
}

func TestEveryStopsWhenStopCloses(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	ran := make(chan struct{}, 1)
	go func() {
		defer close(done)
		Every(stop, time.Millisecond, func() bool {
			select {
			case ran <- struct{}{}:
			default:
			}
			return true
		})
	}()
	<-ran
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every still running 5 s after stop closed")
	}
}
