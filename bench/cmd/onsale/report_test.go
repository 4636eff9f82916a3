package main

import (
	"testing"
	"time"
)

func TestFIFO(t *testing.T) {
	t0 := time.Now()
	arrivals := func(ids ...int64) []placement {
		ps := make([]placement, len(ids))
		for i, id := range ids {
			ps[i] = placement{t0.Add(time.Duration(i) * 40 * time.Millisecond), id}
		}
		return ps
	}
	for _, c := range []struct {
		ps                      []placement
		inv, pairs, ties, ahead int
	}{
		{nil, 0, 0, 0, 0},
		{arrivals(1, 2, 3, 4), 0, 6, 0, 0},
		{arrivals(4, 3, 2, 1), 6, 6, 0, 3},
		{arrivals(1, 3, 2, 4), 1, 6, 0, 1},
		{arrivals(5, 1, 2, 3), 3, 6, 0, 3}, // the first arrival placed last: three pairs, three orders ahead of it
		// The second and third buyers sent 1 ms apart: a tie, not an inversion.
		{[]placement{{t0, 1}, {t0.Add(40 * time.Millisecond), 3}, {t0.Add(41 * time.Millisecond), 2}, {t0.Add(80 * time.Millisecond), 4}}, 0, 5, 1, 0},
	} {
		inv, pairs, ties, ahead, listed := fifo(c.ps, 5*time.Millisecond)
		if inv != c.inv || pairs != c.pairs || ties != c.ties || ahead != c.ahead || len(listed) != inv {
			t.Errorf("fifo(%v) = %d, %d, %d, %d, %v; want %d, %d, %d, %d", c.ps, inv, pairs, ties, ahead, listed, c.inv, c.pairs, c.ties, c.ahead)
		}
	}
}

func TestPct(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 10; i++ {
		d = append(d, time.Duration(i)*time.Second)
	}
	for p, want := range map[float64]time.Duration{0.5: 5 * time.Second, 0.9: 9 * time.Second, 0.99: 10 * time.Second, 1: 10 * time.Second} {
		if got := pct(d, p); got != want {
			t.Errorf("pct(%v) = %s, want %s", p, got, want)
		}
	}
	if pct(nil, 0.5) != 0 {
		t.Error("pct of nothing")
	}
}
