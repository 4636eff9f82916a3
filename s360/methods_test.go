package s360

import (
	"strings"
	"testing"
	"time"
)

func TestTags(t *testing.T) {
	avail, _ := Classifier{}.Classify(APIPrefix + "availabilityService/v1_33/getEventAvailability")
	catalog, _ := Classifier{}.Classify(APIPrefix + "catalogService/v1_33/getCatalogDetailed")
	c, _ := Canonical([]byte(`{"pointOfSalesId":9,"productIds":[1,2],"performanceIds":[3],"eventIds":[4],"performanceId":5}`))
	if got := strings.Join(Tags(avail, c), ","); got != "product:1,product:2,performance:3,performance:5,event:4" {
		t.Fatalf("tags %s", got)
	}
	if got := Tags(avail, []byte(`{"passId":7}`)); len(got) != 1 || got[0] != UntaggedTag {
		t.Fatalf("an availability request naming no id: %v, want [%s]", got, UntaggedTag)
	}
	if Tags(catalog, c) != nil {
		t.Fatal("catalog entries tagged")
	}
}

// The table is consistent: every cacheable method has a freshness, every
// availability method tags and a floor, feeds are uncached and floored,
// and every method's service is known.
func TestMethodsTable(t *testing.T) {
	for name, m := range Methods {
		svc, _, _ := strings.Cut(name, "/")
		if m.Class.Cacheable() && m.MaxAge <= 0 {
			t.Errorf("%s: cacheable without a max age", name)
		}
		if m.Class == Availability && (len(m.Tags) == 0 || m.Floor != time.Minute) {
			t.Errorf("%s: availability without tags or S-360's minute floor", name)
		}
		if m.Feed && (m.Class != Uncached || m.Floor <= 0) {
			t.Errorf("%s: a feed must be uncached and floored", name)
		}
		if _, ok := Services[svc]; !ok && m.Class.Cacheable() {
			t.Errorf("%s: service %s has no defaults in Services", name, svc)
		}
	}
	call := Call{Service: "availabilityService", Method: "getSomethingNew", Version: "v1_33"}
	if d := DefaultMaxAge(call); d != time.Hour {
		t.Errorf("an availability method the table does not name: max age %s, want the service's 1h", d)
	}
}
