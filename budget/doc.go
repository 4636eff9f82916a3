// Package budget is the single gate every upstream S-360 call passes:
// foreground misses, orders, background watchers and token calls alike.
// S-360 counts all calls of an institution against one limit (180 per
// minute by default, less on some contracts) and answers 509 or 429 beyond
// it, so the sidecar must make exceeding its configured limit impossible,
// whatever the website does (docs/S360.md, "Rate limits").
//
// # Sliding log, not a token bucket
//
// The limit is kept as a sliding log: the grant time of every call in the
// last window is remembered, and a call is granted only while fewer than
// Config.Calls of them lie in the window that ends now. That makes "at most
// Calls in ANY interval of length Window" an invariant. A token bucket of
// the same size does not: a full bucket can be emptied at the end of one
// window and refilled during the next, letting nearly 2×Calls through in
// one window, which is exactly what gets an institution throttled. The log
// costs one time.Time per call in the window (a few kilobytes at S-360's
// rates), and a binary search per decision.
//
// # Priorities and the reserves
//
// Waiters are served Order first, then Watch (the watchers' polls), then
// Foreground, then Background, FIFO within a priority. Each may use at most
// what the one before it may: the last OrderReserve slots of a window are
// for orders, the WatchReserve before them for orders and polls, and
// Background (refresh-ahead) may not use the Reserve before those. A
// refresh storm or a flood of misses never leaves an order or a poll
// without a slot. Clients (Call.Client) share the Foreground allowance
// max-min fairly: a lone client may use all of it, and while clients
// compete each active one is sure of an equal share (quota.go); an
// explicit ClientQuota caps each client besides. At most MaxClients
// clients are tracked. The reserves and the quota are scaled to the
// effective limit.
//
// # Pushback, pause scopes and the adaptive limit
//
// When S-360 answers 509/429 anyway (another client of the institution, a
// contract lower than configured), PushbackCall pauses the narrowest scope
// that explains it: the call's key, its method, or the whole institution
// (see PushbackCall). Calls under a key or method pause are refused at
// once. An institution pause holds everything but orders for Retry-After
// or an exponential backoff; after it a single probe is let through, and
// the others wait until the probe's Success (or the next pushback), so a
// recovering upstream is not hit by the whole backlog. An institution
// pause also lowers the effective limit to 0.9 × the calls S-360 had
// answered in the window; each full window without pushback raises it by
// AdaptiveStep, up to Calls (unless FixedLimit). Whatever the limit, the
// sliding log guarantees it in every window.
//
// # Floors
//
// Some methods have their own, per-request limit (getCatalogDetailed once
// per 10 minutes, availability once a minute). FloorWait and MarkFetched
// keep a minimum interval between upstream calls of one cache key: the
// caller (which already coalesces calls per key) asks FloorWait before it
// asks for a slot, serves what it has while the floor runs, and calls
// MarkFetched when it makes the call.
package budget
