package s360

import "testing"

func BenchmarkCanonicalReference(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				canonicalRef(bb.body)
			}
		})
	}
}
