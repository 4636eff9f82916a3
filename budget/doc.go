// Package budget is the single gate every upstream S-360 call passes:
// foreground misses, orders, background watchers and token calls alike.
// S-360 counts all calls of an institution against one limit (180 per
// minute by default, less on some contracts) and answers 509 or 429 beyond
// it, so the sidecar must make exceeding its configured limit impossible,
// whatever the website does (S360-API.md §4).
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
// # Priorities and the reserve
//
// Waiters are served Order first, then Foreground, then Background, FIFO
// within a priority. Background work (watchers, refresh-ahead) may not use
// the last Config.Reserve slots of a window: a refresh storm must never
// leave a buyer's cache miss or order without a slot. Order and Foreground
// share the whole window; an order simply jumps the queue.
//
// # Pushback
//
// When S-360 answers 509/429 anyway (another client of the institution, a
// contract lower than configured), Pushback pauses every call for
// Retry-After or an exponential backoff. After the pause a single probe is
// let through; the others wait until the probe's Success (or the next
// Pushback), so a recovering upstream is not hit by the whole backlog.
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
