// Package sim simulates the S-360 (SecuTix) web services of one institution,
// after what docs/S360.md says of it: the token endpoint, the catalog, availability and
// external-order services, the ticket shop's cart redirect, S-360's rate
// limits, and a control API for tests. It uses the standard library only;
// cmd/s360sim serves it.
//
// # Flags of s360sim (Config fields)
//
//	-addr 127.0.0.1:8081        listen address (s360sim only; prints "s360sim listening on http://ADDR")
//	-institution MOSA           token sub; tokens of another institution get 401
//	-operator MOSA_WEB          operator and secret the auth endpoint accepts (any partner)
//	-secret sim-secret
//	-partner s360edge           informational
//	-products 12                generated products (deterministic for a seed)
//	-seed 1
//	-catalog-mb 0               if > 0, overrides -products to get a getCatalogDetailed body of about N MiB
//	                            (about 280 products per MiB: 2800 products ≈ 10 MiB, 3000 ≈ 10.7 MiB)
//	-token-ttl 30s
//	-rate-limit 180             calls per -rate-window for the whole institution, summed over every endpoint,
//	                            auth included (platform.secutix.com/backend/api_rate_limits); 0 = off
//	-rate-window 1m             fixed window aligned on multiples of its length
//	-limit-scope institution    what -rate-limit counts: institution, or endpoint: each endpoint (one published
//	                            service, e.g. availabilityService; auth is one) separately, as the older REST and
//	                            SOAP standards pages state it (60 requests a minute per endpoint per institution:
//	                            -rate-limit defaults to 60 then)
//	-catalog-floor 10m          getCatalogDetailed / getCatalog: once per floor per identical body; 0 = off
//	-availability-floor 1m      each availabilityService method, same rule, requestId ignored; 0 = off
//	                            These are S-360's documented per-key limits (docs/S360.md, "Rate limits"), on by default;
//	                            refusals answer the rate status and count in floorRefused. Floors follow the
//	                            simulator's clock (/_sim/clock), and POST /_sim/faults {"catalogFloor": "0s",
//	                            "availabilityFloor": "0s"} turns them off at run time.
//	-rate-status 509            status of rate-limited calls (509 or 429); no Retry-After header. The body says
//	                            which limit was hit: {"error": "rate_limited", "scope": "institution"|"endpoint"|
//	                            "parameters"|"injected", "endpoint": service (endpoint), "method": service/method
//	                            (parameters), "limit": n and "window": "1m0s" (institution, endpoint), "interval":
//	                            the floor (parameters), "message": text}. S-360's own body is not documented.
//	-latency 0                  added to every tnseb call
//	-catalog-latency 0          added to getCatalogDetailed and getCatalog
//	-in-progress 0              the first N getCatalogDetailed calls answer in_progress
//	-setup-field lastSetupUpdate  JSON field of getLastSetupUpdate's timestamp
//	-error-field statusDetail   envelope field that carries codes such as error.order.availability
//	                            (statusCode is "error"; statusMessage/statusDetail hold the human message)
//
// # S-360 endpoints
//
//	POST /tnai/backend-apis/v1/auth (also /tnco/...)  {operator, partner, secret} → {token}: HS256 JWT, sub/aud/iss/iat/exp
//	POST /tnseb/backend-apis/{service}/v{N}_{NN}/{method}  JSON body, Bearer token
//	  catalogService: getCatalogDetailed, getCatalog, getLastSetupUpdate, getPOSConfig, isCatalogServiceAlive
//	  availabilityService: getEventAvailability, getPerformanceAvailability, getProductAvailability,
//	                       getSeatsAvailability, getUpdatedAvailabilities,
//	                       getAvailableThemeAndLanguage {passId, timeslotIds} (no passes: always an empty list)
//	  setupService (docs/S360.md, "Methods"; same ids as the catalog):
//	    listSeasons {} → seasons[]{id, code, state, start, end, externalName, priceLevels: [], audienceCategories: []}
//	    listAudienceSubCategories {seasonId} → audienceSubCategories[]{id, code, externalName, audienceCategoryKind,
//	                                            requiredAudienceSubCategoryIds, crossSeatCategory}
//	    listPriceLevels {seasonId} → priceLevels[]{id, code, mainCategory}
//	    listVatCodes {} → vatCodes[]{id, code, currentRate (5.5 % = 5500), country}
//	    searchProductsByCriteria {searchProductsCriteria: {seasonIds, productFamilyTypes}, minIndex, nbMaxResults}
//	                            → products[] (catalog shape, no performance state, any product state), by id,
//	                            at most 100 a page
//	    seasonId missing → error.parameter.mandatory; unknown → error.season.unknown
//	  externalOrderHistoryService: listTicketsByCriteria {ticketFilterCriteria: {productId, startDate, endDate,
//	                            pointOfSalesId}, paginationParameter: {startPosition, maxResult (≤ 5000)}}
//	                            → {truncated, ticketSummaries[]{ticketState, performanceId, seatCategoryId,
//	                            audienceSubCategoryId, audienceSubCategory, priceLevelId, price}}: one per ticket
//	                            of the simulator's orders created in the range; dates are mandatory; with
//	                            pointOfSalesId the list is empty, as observed on S-360
//	  externalOrderFacade: createOrUpdateOrder (singleEntryAttributionOperations only)
//	GET /api/1/redirect/{cart,checkout}?orderId=&lang=[&secret=|&orderSecretId=]  302 → /shop/{cart,checkout}
//	GET /api/1/redirect/{other...}  302 → /shop/{other...} (placeholder page)
//	GET /shop/cart, /shop/checkout  HTML: <h1 id="cart-title">, <span id="order-id">, rows .cart-line, #cart-total
//
// Order of checks on an API call: path (404) → verb (405) → injected faults
// (down, burst509, fail5xx) → body size (413, 1 MiB) → rate limit (institution or endpoint) →
// Content-Type (415) → JSON object body (400) → bearer (401 invalid_token /
// token_expired) → method (404) → in_progress fault → method floor → the
// method (400 if a field has the wrong JSON type) → latency → answer.
// Every envelope carries statusCode, statusDetail and the echoed requestId
// (null when absent). Business errors are HTTP 200 envelopes with statusCode
// "error", the code in -error-field and a human statusMessage; order errors
// add "orderUpdateData": null and "expectedException": true. Errors outside
// envelopes are JSON {"error": code, "message": text}. Gzip when asked.
//
// Availability methods all require pointOfSalesId equal to getPOSConfig's
// posId; getEventAvailability and getPerformanceAvailability require
// performanceIds, getProductAvailability and getUpdatedAvailabilities
// productIds (and referenceDate), getSeatsAvailability performanceId and
// seatCategoryId. Unknown ids are skipped. The "level" colour is our own
// convention: RED sold out, ORANGE under 20 % of the seats put on sale left,
// GREEN otherwise. Orders: pointOfSalesId, orderType (SALE, RESERVATION or
// OPTION), both isResumeAll* booleans and a non-empty
// singleEntryAttributionOperations are required; performances must be
// RUNNING and (seat category, audience subcategory) must have a price.
//
// # Control API (no auth)
//
//	GET  /_sim/counters   {"calls": {"auth": n, "catalogService/getCatalogDetailed": n, ..., "unknown": n},
//	                       "statuses": {"200": n, "509": n, "0": n (connection closed)}, "rateLimited": n, "total": n,
//	                       "rateLimitedBy": {"institution": n, "endpoint": n, "parameters": n, "injected": n},
//	                       "floorRefused": {"catalogService/getCatalogDetailed": n, ...}, "perMinute": [{"start": iso, "calls": n}],
//	                       "perMinuteByEndpoint": {"availabilityService": [{"start": iso, "calls": n}], "auth": [...], ...}}
//	                      rateLimited counts every rate-status answer, rateLimitedBy the same by the limit hit (the
//	                      body's scope); floorRefused those of the per-key floors, by method.
//	                      API calls only (auth and tnseb; not shop or control requests). perMinute counts the calls
//	                      not rate-limited per bucket of -rate-window (a minute by default), aligned, oldest first;
//	                      perMinuteByEndpoint the same per endpoint (service, or auth).
//	POST /_sim/reset      zero counters, rate-limit window and floors (not stock, orders or faults)
//	POST /_sim/setup      rename product 0 ("… v2", "… v3"…), raise its first price by 1 €, bump getLastSetupUpdate
//	                      → {"lastSetupUpdate": iso}
//	POST /_sim/stock      {"performanceId", "seatCategoryId", "quantity"} set absolute; marks the product updated
//	GET  /_sim/faults     current switches
//	POST /_sim/faults     any of {"latency": "1s", "catalogLatency": "20s", "fail5xx": N, "burst509": N,
//	                      "inProgress": N, "expireTokens": true, "rateStatus": 429, "rateLimit": 60,
//	                      "rateWindow": "1m", "limitScope": "endpoint", "catalogFloor": "10m", "availabilityFloor": "1m",
//	                      "tokenTTL": "30s", "down": true}; unknown fields → 400. fail5xx: next N tnseb calls
//	                      get 503; burst509: next N API calls (auth included) get the rate status;
//	                      down: every API call (auth included) has its connection closed.
//	GET  /_sim/clock, POST /_sim/clock {"advance": "10m"} → {"now": iso}  (tokens, windows, floors, timestamps)
//	GET  /_sim/fixtures   {"institution", "posId", "paymentMethodIds", "products": [{"id", "code", "name", "state",
//	                      "seasonCode", "performances": [{"id", "state", "seatCategoryIds", "audienceSubCategoryIds"}]}]}
//	GET  /_sim/orders     [{"orderId", "orderSecretId", "orderType", "externalReference", "created", "lines": [...], "total"}]
//	GET  /_sim/redirects  [{"path", "orderId", "lang", "secret", "query", "status"}]
//
// Facts the public documentation leaves open are our assumptions, made
// configurable where it matters: the availability "level" colours, the error
// field, the getLastSetupUpdate field, the catalog XML of getCatalog.
package sim
