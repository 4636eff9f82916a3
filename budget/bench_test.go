package budget

import (
	"testing"
	"time"
)

// BenchmarkTryAcquire measures the gate every upstream call passes, on the
// real clock: granted (a limit never reached; a short window keeps the log
// small) and refused (the window is full).
func BenchmarkTryAcquire(b *testing.B) {
	b.Run("granted", func(b *testing.B) {
		bud := New(Config{Calls: 1 << 20, Window: time.Millisecond})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _ := bud.TryAcquire(Foreground); !ok {
					b.Fatal("refused")
				}
			}
		})
	})
	b.Run("refused", func(b *testing.B) {
		bud := New(Config{Calls: 100, Window: time.Hour})
		for range 100 {
			bud.TryAcquire(Order)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _ := bud.TryAcquire(Foreground); ok {
					b.Fatal("granted")
				}
			}
		})
	})
}
