package sim

import "time"

// Config sets up a simulator. Start from DefaultConfig: in New, a zero
// RateLimit, CatalogFloor, AvailabilityFloor, Latency or CatalogLatency
// means "off", while empty strings and other zero values take the default.
type Config struct {
	Institution string // institution code, the token's sub (default MOSA)
	Operator    string // virtual operator accepted by the auth endpoint (default MOSA_WEB)
	Secret      string // operator secret (default sim-secret)
	Partner     string // informational: any partner is accepted (default s360edge)

	Products int   // number of generated products (default 12)
	Seed     int64 // generator seed (default 1)

	TokenTTL          time.Duration // lifetime of issued tokens (default 30s)
	RateLimit         int           // calls per RateWindow for the institution (or each endpoint), 0 = unlimited (default 180)
	RateWindow        time.Duration // fixed, aligned window of RateLimit (default 1m)
	LimitScope        string        // what RateLimit counts: ScopeInstitution (default) or ScopeEndpoint
	CatalogFloor      time.Duration // min interval per identical getCatalog(Detailed) body (default 10m)
	AvailabilityFloor time.Duration // min interval per identical availability body (default 1m)
	RateStatus        int           // HTTP status when rate limited: 509 or 429 (default 509)

	Latency        time.Duration // added to every tnseb call
	CatalogLatency time.Duration // added to getCatalogDetailed and getCatalog
	InProgress     int           // the first N getCatalogDetailed calls answer in_progress

	SetupField string // JSON field of getLastSetupUpdate's timestamp (default lastSetupUpdate)
	ErrorField string // envelope field that carries error codes such as error.order.availability (default statusDetail)

	SAMLSPMetadata string // if set, cmd/s360sim serves the shop's SAML IdP (NewIdP) for the SP with this metadata URL

}

// DefaultEndpointLimit is s360sim's -rate-limit with -limit-scope
// endpoint: the older SecuTix pages' 60 requests a minute per endpoint.
const DefaultEndpointLimit = 60

// DefaultConfig returns the defaults of the s360sim flags.
func DefaultConfig() Config {
	return Config{
		Institution:       "MOSA",
		Operator:          "MOSA_WEB",
		Secret:            "sim-secret",
		Partner:           "s360edge",
		Products:          12,
		Seed:              1,
		TokenTTL:          30 * time.Second,
		RateLimit:         180,
		RateWindow:        time.Minute,
		LimitScope:        ScopeInstitution,
		CatalogFloor:      10 * time.Minute,
		AvailabilityFloor: time.Minute,
		RateStatus:        509,
		SetupField:        "lastSetupUpdate",
		ErrorField:        "statusDetail",
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	def := func(v *string, dv string) {
		if *v == "" {
			*v = dv
		}
	}
	def(&c.Institution, d.Institution)
	def(&c.Operator, d.Operator)
	def(&c.Secret, d.Secret)
	def(&c.Partner, d.Partner)
	def(&c.SetupField, d.SetupField)
	def(&c.ErrorField, d.ErrorField)
	def(&c.LimitScope, d.LimitScope)
	if c.Products <= 0 {
		c.Products = d.Products
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = d.TokenTTL
	}
	if c.RateWindow <= 0 {
		c.RateWindow = d.RateWindow
	}
	if c.RateStatus == 0 {
		c.RateStatus = d.RateStatus
	}
	return c
}
