package sim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
	_ "time/tzdata" // Europe/Paris must resolve on hosts without zoneinfo
)

// isoLayout is S-360's datetime format: ISO-8601, milliseconds, offset.
const isoLayout = "2006-01-02T15:04:05.000-07:00"

var paris = mustLoad("Europe/Paris")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.FixedZone("CET", 3600)
	}
	return loc
}

func iso(t time.Time) string { return t.In(paris).Format(isoLayout) }

type translation struct {
	Locale string `json:"locale"`
	Value  string `json:"value"`
}

// translated is S-360's TranslatedString.
type translated struct {
	Translations []translation `json:"translations"`
}

func tr(en, fr string) translated {
	return translated{[]translation{{"en", en}, {"fr", fr}}}
}

// The catalog types marshal to the shape of getCatalogDetailed's catalogData
// (docs/S360.md, "Methods"). Unexported fields hold the simulator's state.
// Views handed to the encoder are shallow copies taken under Server.mu, so
// fields reachable from them (names, prices) are replaced, never mutated.
type catalog struct {
	Seasons   []*season `json:"seasons"`
	products  []*product
	vatCodeID int64 // the one VAT code of every product (listVatCodes)
	prodByID  map[int64]*product
	perfByID  map[int64]*performance
}

type season struct {
	ID                 int64              `json:"id"`
	Code               string             `json:"code"`
	ExternalName       translated         `json:"externalName"`
	AudienceCategories []audienceCategory `json:"audienceCategories"`
	PriceLevels        []priceLevel       `json:"priceLevels"`
	Products           []*product         `json:"products"`
	start, end         time.Time          // for listSeasons
}

type audienceCategory struct {
	ID                    int64                 `json:"id"`
	Code                  string                `json:"code"`
	ExternalName          translated            `json:"externalName"`
	AudienceSubCategories []audienceSubCategory `json:"audienceSubCategories"`
}

type audienceSubCategory struct {
	ID                   int64      `json:"id"`
	Code                 string     `json:"code"`
	ExternalName         translated `json:"externalName"`
	AudienceCategoryKind string     `json:"audienceCategoryKind"`
	factor               int64      // price in percent of the full price
}

type priceLevel struct {
	ID           int64  `json:"id"`
	Code         string `json:"code"`
	MainCategory string `json:"mainCategory"`
}

type seatCategory struct {
	ID           int64      `json:"id"`
	Code         string     `json:"code"`
	ExternalName translated `json:"externalName"`
}

type product struct {
	ID                  int64      `json:"id"`
	Code                string     `json:"code"`
	ProductFamilyType   string     `json:"productFamilyType"`
	State               string     `json:"state"`
	VatCodeID           int64      `json:"vatCodeId"`
	ExternalName        translated `json:"externalName"`
	ExternalDescription translated `json:"externalDescription"`
	Event               *event     `json:"event,omitempty"`
	season              *season
	name                string    // English name, for the cart page
	lastUpdate          time.Time // last stock change, for getUpdatedAvailabilities
}

type event struct {
	ID           int64          `json:"id"`
	Performances []*performance `json:"performances"`
}

type performance struct {
	ID             int64          `json:"id"`
	State          string         `json:"state"`
	Start          string         `json:"start"`
	Duration       int            `json:"duration"`
	SeatCategories []seatCategory `json:"seatCategories"`
	Prices         []price        `json:"prices"`
	product        *product
	stock          map[int64]int // seat category id → available seats
	capacity       map[int64]int // seat category id → seats put on sale
}

type price struct {
	SeatCatID    int64 `json:"seatCatId"`
	AudSubCatID  int64 `json:"audSubCatId"`
	PriceLevelID int64 `json:"priceLevelId"`
	Amount       int64 `json:"amount"` // thousandths of the currency unit
}

func sellable(state string) bool { return state == "RUNNING" || state == "SUSPENDED" }

func (p *performance) price(seatCat, audSub int64) (int64, bool) {
	for _, pr := range p.Prices {
		if pr.SeatCatID == seatCat && pr.AudSubCatID == audSub {
			return pr.Amount, true
		}
	}
	return 0, false
}

var (
	adjectives = [][2]string{{"Silent", "silencieux"}, {"Golden", "doré"}, {"Hidden", "caché"}, {"Broken", "brisé"},
		{"Frozen", "gelé"}, {"Endless", "sans fin"}, {"Secret", "secret"}, {"Wild", "sauvage"}, {"Blue", "bleu"},
		{"Last", "dernier"}, {"Little", "petit"}, {"Magic", "magique"}}
	nouns = [][2]string{{"Garden", "Le Jardin"}, {"River", "Le Fleuve"}, {"Night", "Le Soir"}, {"Mirror", "Le Miroir"},
		{"Voyage", "Le Voyage"}, {"Forest", "Le Bois"}, {"Prince", "Le Prince"}, {"Waltz", "Le Bal"},
		{"Orchestra", "L'Orchestre"}, {"Season", "Le Temps"}, {"Circus", "Le Cirque"}, {"Opera", "L'Opéra"}}
	genres = [][2]string{{"opera", "opéra"}, {"ballet", "ballet"}, {"symphonic concert", "concert symphonique"},
		{"recital", "récital"}, {"contemporary dance", "danse contemporaine"}, {"chamber music", "musique de chambre"}}
)

// idSeq hands out increasing ids with seeded gaps, like S-360's sequences.
type idSeq struct {
	next int64
	rng  *rand.Rand
}

func (s *idSeq) id() int64 {
	s.next += 1 + s.rng.Int64N(40)
	return s.next
}

// generate builds a deterministic catalog of n products from seed. Dates are
// relative to now (performances start a week later) so that they stay upcoming.
func generate(n int, seed int64, now time.Time) *catalog {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x53360))
	setup := &idSeq{10228100000000, rng}
	prodIDs := &idSeq{10228231108000, rng}
	perfIDs := &idSeq{10228231500000, rng}
	c := &catalog{prodByID: map[int64]*product{}, perfByID: map[int64]*performance{}}

	day := time.Date(now.In(paris).Year(), now.In(paris).Month(), now.In(paris).Day(), 0, 0, 0, 0, paris).AddDate(0, 0, 7)
	seatCats := make([][]seatCategory, 2)
	for k := range 2 {
		year := day.Year() + k
		se := &season{ID: setup.id(), Code: fmt.Sprintf("S%d", year),
			ExternalName: tr(fmt.Sprintf("Season %d/%d", year, year+1), fmt.Sprintf("Saison %d/%d", year, year+1)),
			Products:     []*product{},
			start:        time.Date(year, time.September, 1, 0, 0, 0, 0, paris),
			end:          time.Date(year+1, time.August, 31, 23, 59, 59, 0, paris)}
		subs := []audienceSubCategory{
			{setup.id(), "ADULT", tr("Adult", "Adulte"), "FULL", 100},
			{setup.id(), "SENIOR", tr("Senior", "Senior"), "REDUCED", 80},
			{setup.id(), "CHILD", tr("Child", "Enfant"), "REDUCED", 50},
			{setup.id(), "STUDENT", tr("Student", "Étudiant"), "REDUCED", 60},
		}
		se.AudienceCategories = []audienceCategory{
			{setup.id(), "PUBLIC", tr("General public", "Tout public"), subs[:2]},
			{setup.id(), "YOUNG", tr("Young public", "Jeune public"), subs[2:]},
		}
		se.PriceLevels = []priceLevel{{setup.id(), "PL1", "OCCASIONAL"}, {setup.id(), "PL2", "SUBSCRIBER"}}
		for j := range 4 {
			seatCats[k] = append(seatCats[k], seatCategory{setup.id(), fmt.Sprintf("CAT%d", j+1),
				tr(fmt.Sprintf("Category %d", j+1), fmt.Sprintf("Catégorie %d", j+1))})
		}
		c.Seasons = append(c.Seasons, se)
	}
	vatCode := setup.id()
	c.vatCodeID = vatCode

	for i := range n {
		k := i % 2
		se := c.Seasons[k]
		adj, noun, genre := adjectives[rng.IntN(len(adjectives))], nouns[rng.IntN(len(nouns))], genres[rng.IntN(len(genres))]
		state := "RUNNING"
		if r := rng.IntN(100); i > 0 && r < 8 {
			state = "SUSPENDED"
		} else if i > 0 && r < 15 {
			state = "CLOSED"
		} else if i > 0 && r < 18 {
			state = "CANCELED"
		}
		name := fmt.Sprintf("The %s %s", adj[0], noun[0])
		p := &product{
			ID: prodIDs.id(), Code: fmt.Sprintf("EV%05d", i), ProductFamilyType: "SINGLE_ENTRY", State: state,
			VatCodeID:    vatCode,
			ExternalName: tr(name, fmt.Sprintf("%s %s", noun[1], adj[1])),
			ExternalDescription: tr(fmt.Sprintf("A %s in %d acts. %s, staged for the %s season.", genre[0], 1+rng.IntN(4), name, se.Code),
				fmt.Sprintf("Un %s en %d actes. %s %s, mis en scène pour la saison %s.", genre[1], 1+rng.IntN(4), noun[1], adj[1], se.Code)),
			season: se, name: name, lastUpdate: now.Truncate(time.Millisecond),
		}
		p.Event = &event{ID: setup.id()}
		cats := seatCats[k][:2+rng.IntN(3)]
		base := int64(20+rng.IntN(100)) * 1000
		for range 1 + rng.IntN(3) {
			start := day.AddDate(k, 0, rng.IntN(300)).Add(time.Duration(15+4*rng.IntN(2))*time.Hour + 30*time.Minute)
			perf := &performance{ID: perfIDs.id(), State: state, Start: iso(start), Duration: 3600 + 900*rng.IntN(9),
				SeatCategories: cats, product: p, stock: map[int64]int{}, capacity: map[int64]int{}}
			for j, sc := range cats {
				full := base - int64(j)*base/5
				for _, ac := range se.AudienceCategories {
					for _, sub := range ac.AudienceSubCategories {
						amount := full * sub.factor / 100 / 500 * 500
						perf.Prices = append(perf.Prices, price{sc.ID, sub.ID, se.PriceLevels[0].ID, amount})
					}
				}
				perf.capacity[sc.ID] = 20 + rng.IntN(380)
				perf.stock[sc.ID] = perf.capacity[sc.ID]
			}
			p.Event.Performances = append(p.Event.Performances, perf)
			c.perfByID[perf.ID] = perf
		}
		se.Products = append(se.Products, p)
		c.products = append(c.products, p)
		c.prodByID[p.ID] = p
	}
	return c
}

// view returns the filtered catalogData. It copies every level down to the
// performances, so it must be called under Server.mu (read) and the result
// can be encoded after the lock is released.
func (c *catalog) view(seasonCode, productCode string, extended bool) *catalog {
	out := &catalog{Seasons: []*season{}}
	for _, se := range c.Seasons {
		if seasonCode != "" && se.Code != seasonCode {
			continue
		}
		sc := *se
		sc.Products = []*product{}
		for _, p := range se.Products {
			if (productCode != "" && p.Code != productCode) || (!extended && !sellable(p.State)) {
				continue
			}
			pc := *p
			ev := &event{ID: p.Event.ID, Performances: []*performance{}}
			for _, perf := range p.Event.Performances {
				if extended || sellable(perf.State) {
					pf := *perf
					ev.Performances = append(ev.Performances, &pf)
				}
			}
			pc.Event = ev
			sc.Products = append(sc.Products, &pc)
		}
		if productCode == "" || len(sc.Products) > 0 {
			out.Seasons = append(out.Seasons, &sc)
		}
	}
	return out
}

// ProductsForMB returns the product count whose getCatalogDetailed body
// (default scope, no gzip) weighs about mb mebibytes with this seed.
func ProductsForMB(mb float64, seed int64) int {
	const sample = 400
	c := generate(sample, seed, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	b, _ := json.Marshal(map[string]any{"statusCode": "success", "catalogData": c.view("", "", false)})
	n := int(mb * (1 << 20) * sample / float64(len(b)))
	return max(n, 1)
}
