package s360

import (
	"time"

	"github.com/tidwall/gjson"
)

// Method is what the sidecar knows of one S-360 method (docs/S360.md,
// "Methods" and "Rate limits").
type Method struct {
	Class Class
	// Floor is the minimum interval S-360 allows between two calls with
	// the same parameters (0: none published); the budget's default
	// min_interval.
	Floor time.Duration
	// MaxAge is how long an answer stays fresh by default (cacheable
	// classes); max_age overrides it.
	MaxAge time.Duration
	// Feed marks the methods that tell what changed (the watchers poll
	// them): not cacheable, but the website's calls within the floor are
	// answered from a copy of the last answer.
	Feed bool
	// Tags are the request fields whose ids tag a stored answer, so that
	// a change S-360 reports for them invalidates it (see Tags).
	Tags []TagField
}

// TagField is a request field that names ids, and the tag prefix of each.
type TagField struct{ Field, Prefix string }

// availabilityTags are the ids an availability request names.
var availabilityTags = []TagField{
	{"productIds", "product:"}, {"productId", "product:"}, {"composedProductId", "product:"},
	{"performanceIds", "performance:"}, {"performanceId", "performance:"},
	{"eventIds", "event:"},
}

const (
	catalogAge      = 24 * time.Hour // and until the setup generation changes
	availabilityAge = time.Hour
	catalogFloor    = 10 * time.Minute
	perMinute       = time.Minute
)

// Methods is the one table of the S-360 methods the sidecar knows, by
// "service/method": the built-in allow-list (Class; a method S-360 adds,
// or one it has that is not named here (deleteEverything, setStock...),
// stays denied until the operator's allow opens it), the budget's default
// floors, the cache's default freshness, the feeds and the invalidation
// tags are all read from it. A new cached method is one row here.
var Methods = map[string]Method{
	"catalogService/getCatalog":                        {Class: Catalog, Floor: catalogFloor, MaxAge: catalogAge},
	"catalogService/getCatalogDetailed":                {Class: Catalog, Floor: catalogFloor, MaxAge: catalogAge},
	"catalogService/getPOSConfig":                      {Class: Catalog, MaxAge: catalogAge},
	"catalogService/getLastSetupUpdate":                {Class: Uncached, Floor: perMinute, Feed: true},
	"catalogService/isCatalogServiceAlive":             {Class: Uncached, Floor: perMinute, Feed: true},
	"setupService/listSeasons":                         {Class: Catalog, MaxAge: catalogAge},
	"setupService/listAudienceSubCategories":           {Class: Catalog, MaxAge: catalogAge},
	"setupService/listPriceLevels":                     {Class: Catalog, MaxAge: catalogAge},
	"setupService/listVatCodes":                        {Class: Catalog, MaxAge: catalogAge},
	"setupService/searchProductsByCriteria":            {Class: Catalog, MaxAge: catalogAge},
	"availabilityService/getEventAvailability":         {Class: Availability, Floor: perMinute, MaxAge: availabilityAge, Tags: availabilityTags},
	"availabilityService/getPerformanceAvailability":   {Class: Availability, Floor: perMinute, MaxAge: availabilityAge, Tags: availabilityTags},
	"availabilityService/getProductAvailability":       {Class: Availability, Floor: perMinute, MaxAge: availabilityAge, Tags: availabilityTags},
	"availabilityService/getSeatsAvailability":         {Class: Availability, Floor: perMinute, MaxAge: availabilityAge, Tags: availabilityTags},
	"availabilityService/getAvailableThemeAndLanguage": {Class: Availability, Floor: perMinute, MaxAge: availabilityAge, Tags: availabilityTags},
	"availabilityService/getUpdatedAvailabilities":     {Class: Uncached, Floor: perMinute, Feed: true},
	"externalOrderFacade/createOrUpdateOrder":          {Class: Order},
}

// Services holds, by service, what a method of it that Methods does not
// name gets (one the operator allows): availability methods are floored
// at a minute like the known ones. Their "service/*" pattern is also what
// a max_age or min_interval for the whole service replaces.
var Services = map[string]Method{
	"catalogService":      {MaxAge: catalogAge},
	"setupService":        {MaxAge: catalogAge},
	"availabilityService": {Floor: perMinute, MaxAge: availabilityAge},
}

// UntaggedTag marks an entry whose request names no id of Method.Tags:
// the availability watcher invalidates it on any reported change.
const UntaggedTag = "availability:untagged"

// Tags are the invalidation handles of a stored answer of call: the ids
// its request names in the method's Tags fields, else UntaggedTag; nil
// for a method without tags.
func Tags(call Call, canonical []byte) []string {
	m, ok := Methods[call.Name()]
	if !ok || len(m.Tags) == 0 {
		return nil
	}
	var tags []string
	for _, f := range m.Tags {
		v := gjson.GetBytes(canonical, f.Field)
		if v.IsArray() {
			for _, id := range v.Array() {
				tags = append(tags, f.Prefix+id.Raw)
			}
		} else if v.Exists() {
			tags = append(tags, f.Prefix+v.Raw)
		}
	}
	if tags == nil {
		return []string{UntaggedTag}
	}
	return tags
}

// DefaultMaxAge is how long an answer of call stays fresh by default.
func DefaultMaxAge(call Call) time.Duration {
	if m, ok := Methods[call.Name()]; ok && m.MaxAge > 0 {
		return m.MaxAge
	}
	return Services[call.Service].MaxAge
}
