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
// # Pushback, pause scopes and the learned limits
//
// When S-360 answers 509/429 anyway (another client of the institution, a
// contract lower than configured, a limit per endpoint), PushbackCall
// picks the narrowest scope that explains it: the call's key, its method,
// or the whole institution (see PushbackCall). The budget learns a limit
// for each scope S-360 refuses: a refusal of a method lowers the method's
// limit to 0.9 × its calls S-360 had answered in the window, a refusal of
// the institution the effective limit to 0.9 × all the calls answered,
// and a refusal of a method that made most (three quarters or more) of
// the window's calls lowers both, since S-360 may enforce either (its
// current documentation limits the institution, an older page each
// endpoint). Each full window without a refusal of its scope raises a
// limit by AdaptiveStep, up to Calls (unless FixedLimit); a method's limit
// is forgotten there. Calls of a method at its limit wait for the
// method's next slot outside the queue, holding up nobody else. Whatever
// the limits, the sliding log guarantees them in every window.
//
// A refusal a learned limit explains (it lowered one, or it is the echo of
// a call made before the last decrease) pauses nothing: the lowered limit
// holds the calls. Pauses remain for the rest: Retry-After pauses the
// scope that long; a refusal no learned limit explains (FixedLimit, or a
// limit already at or below what the refusal teaches) pauses a key for
// FirstPause, and a method or the institution with an exponential
// backoff. Calls under a key or method pause are refused at once. An
// institution pause holds everything but orders; after it a single probe
// is let through, and the others wait until the probe's Success (or the
// next pushback), so a recovering upstream is not hit by the whole
// backlog.
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
