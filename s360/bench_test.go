package s360

import (
	"fmt"
	"strings"
	"testing"
)

// benchBodies are request bodies as a website sends them: a small
// availability call, and a ~5 KB one (many ids and nested objects, keys out
// of order, a requestId to drop).
var benchBodies = func() []struct {
	name string
	body []byte
} {
	small := `{"requestId":"r-1","performanceIds":[10228231500032],"pointOfSalesId":10228100000100}`
	var b strings.Builder
	b.WriteString(`{"requestId":"r-2","pointOfSalesId":10228100000100,"performanceIds":[`)
	for i := range 130 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", 10228231500000+i*37)
	}
	b.WriteString(`],"filters":[`)
	for i := range 27 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"seatCategoryId":%d,"audienceSubCategoryId":%d,"quantity":%d,"label":"Cat\u00e9gorie %d"}`, 10228100000184+i, 10228100000012+i, i%4+1, i)
	}
	b.WriteString(`],"lang":"fr","includeSoldOut":true}`)
	return []struct {
		name string
		body []byte
	}{{"small", []byte(small)}, {"5KB", []byte(b.String())}}
}()

func BenchmarkCanonical(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(fmt.Sprintf("%s-%dB", bb.name, len(bb.body)), func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Canonical(bb.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkKey(b *testing.B) {
	call := Call{Service: "availabilityService", Version: "v1_33", Method: "getEventAvailability", Class: Availability}
	for _, bb := range benchBodies {
		canonical, err := Canonical(bb.body)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%s-%dB", bb.name, len(canonical)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Key("MOSA", call, canonical)
			}
		})
	}
}

// BenchmarkCanonicalMemo is the handler's memoized canonicaliser: the same
// bytes again (a memo hit), and bodies that differ only in requestId, as
// when a website numbers its calls (a miss and an insert every time).
func BenchmarkCanonicalMemo(b *testing.B) {
	small := benchBodies[0].body
	b.Run("repeated-small", func(b *testing.B) {
		var m CanonicalMemo
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Canonical(small); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unique-requestId-small", func(b *testing.B) {
		bodies := make([][]byte, 2*memoMaxEntries)
		for i := range bodies {
			bodies[i] = fmt.Appendf(nil, `{"requestId":"r-%d",%s`, i, small[len(`{"requestId":"r-1",`):])
		}
		var m CanonicalMemo
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := m.Canonical(bodies[i%len(bodies)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
