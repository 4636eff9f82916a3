package main

import (
	"testing"
	"time"
)

func TestFIFO(t *testing.T) {
	for _, c := range []struct {
		ids               []int64
		inv, pairs, ahead int
	}{
		{nil, 0, 0, 0},
		{[]int64{1, 2, 3, 4}, 0, 6, 0},
		{[]int64{4, 3, 2, 1}, 6, 6, 3},
		{[]int64{1, 3, 2, 4}, 1, 6, 1},
		{[]int64{5, 1, 2, 3}, 3, 6, 3}, // the first arrival placed last: three pairs, three orders ahead of it
	} {
		inv, pairs, ahead := fifo(c.ids)
		if inv != c.inv || pairs != c.pairs || ahead != c.ahead {
			t.Errorf("fifo(%v) = %d, %d, %d; want %d, %d, %d", c.ids, inv, pairs, ahead, c.inv, c.pairs, c.ahead)
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
