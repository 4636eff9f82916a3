package sim

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"time"
)

type catalogRequest struct {
	SeasonCode  string `json:"seasonCode"`
	ProductCode string `json:"productCode"`
	Scope       string `json:"scope"` // "EXTENDED" adds products no longer on sale
}

func (s *Server) catalogView(body []byte) (*catalog, error) {
	var req catalogRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cat.view(req.SeasonCode, req.ProductCode, req.Scope == "EXTENDED"), nil
}

func (s *Server) getCatalogDetailed(body []byte) (envelope, error) {
	v, err := s.catalogView(body)
	if err != nil {
		return nil, err
	}
	return success("catalogData", v, "requestState", "DONE"), nil
}

// getCatalog answers the same catalog as one XML string. The real schema is
// unknown (docs/S360.md, "Methods"); this is encoding/xml of the same data.
func (s *Server) getCatalog(body []byte) (envelope, error) {
	v, err := s.catalogView(body)
	if err != nil {
		return nil, err
	}
	x, err := xml.Marshal(struct {
		XMLName xml.Name  `xml:"catalog"`
		Seasons []*season `xml:"season"`
	}{Seasons: v.Seasons})
	if err != nil {
		return nil, err
	}
	return success("catalogData", xml.Header+string(x), "requestState", "DONE"), nil
}

func (s *Server) getLastSetupUpdate([]byte) (envelope, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return success(s.cfg.SetupField, iso(s.setupAt)), nil
}

func (s *Server) getPOSConfig([]byte) (envelope, error) {
	return success("posConfigData", map[string]any{
		"posId": s.posID, "currencyCode": "EUR", "organizationTimeZone": "Europe/Paris",
		"paymentMethods": paymentMethods,
	}), nil
}

var paymentMethods = []map[string]any{
	{"id": 16362, "code": "CB_WEB", "name": "Credit card"},
	{"id": 16363, "code": "PAYPAL", "name": "PayPal"},
	{"id": 16364, "code": "GIFT_CARD", "name": "Gift card"},
}

func (s *Server) isCatalogServiceAlive([]byte) (envelope, error) { return success(), nil }

// bumpSetup changes the catalog as a back-office edit would: product 0 gets a
// version suffix and its first price rises by 1 €. Fields are replaced, not
// mutated, because views share them (see catalog.view).
func (s *Server) bumpSetup() string {
	now := s.now().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setupN++
	p := s.cat.products[0]
	suffix := fmt.Sprintf(" v%d", s.setupN+1)
	p.name = strings.TrimSuffix(p.name, fmt.Sprintf(" v%d", s.setupN)) + suffix
	fr := strings.TrimSuffix(p.ExternalName.Translations[1].Value, fmt.Sprintf(" v%d", s.setupN)) + suffix
	p.ExternalName = tr(p.name, fr)
	perf := p.Event.Performances[0]
	prices := append([]price(nil), perf.Prices...)
	prices[0].Amount += 1000
	perf.Prices = prices
	if !now.After(s.setupAt) {
		now = s.setupAt.Add(time.Second)
	}
	s.setupAt = now
	return iso(now)
}
