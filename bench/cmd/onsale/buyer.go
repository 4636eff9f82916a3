package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of buyers.
const (
	kindAsync  = "async"  // Prefer: respond-async, polls its ticket
	kindPlain  = "plain"  // an API client without Prefer: waits in person
	kindLeaver = "leaver" // Prefer: respond-async, leaves after its 202 or its first refusal
)

// Outcomes, as the buyer learns them.
const (
	outPlaced    = "placed"
	outWithdrawn = "withdrawn" // 429 order_queued, or a ticket withdrawn
	outRefused   = "refused"   // a final 429 or 503 (after the retries)
	outFailed    = "failed"    // S-360 refused the order, or its outcome is unknown
	outLeft      = "left"      // left after the 202; leftOutcome is the ticket's outcome at the end
	outError     = "error"     // transport error, timeout, unexpected answer
)

type buyer struct {
	i    int
	kind string
	rng  *rand.Rand

	sent     time.Time // first POST
	done     time.Time // when the buyer learned its outcome
	attempts int       // POSTs
	polls    int
	outcome  string
	detail   string // refusal code, failure, error
	orderID  int64  // from redirectUrl, when placed

	ticket      string    // Location of the 202
	queuedAt    time.Time // the ticket's queued_at: arrival at the sidecar
	position    int       // the 202's position
	leftOutcome string    // the ticket's outcome once the line drained, for a buyer who left
}

func (b *buyer) ref() string { return fmt.Sprintf("buyer-%04d", b.i) }

// newBuyers picks, with the seed, which buyers are plain API clients and
// which of the async ones leave: the same buyers in every phase.
func newBuyers() []*buyer {
	n := *buyers
	nPlain := int(float64(n)**plain + 0.5)
	nLeave := int(float64(n-nPlain)**leave + 0.5)
	perm := rand.New(rand.NewPCG(*seed, 0)).Perm(n)
	bs := make([]*buyer, n)
	for i := range bs {
		bs[i] = &buyer{i: i, kind: kindAsync, rng: rand.New(rand.NewPCG(*seed, uint64(i)+1))}
	}
	for k, i := range perm {
		switch {
		case k < nPlain:
			bs[i].kind = kindPlain
		case k < nPlain+nLeave:
			bs[i].kind = kindLeaver
		}
	}
	return bs
}

// run is one buyer: POST the order; on 202 follow the ticket (or leave);
// on a refusal try again after Retry-After, capped, up to -retries times.
func (b *buyer) run(ctx context.Context, client *http.Client, base, body string) {
	for {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+orderPath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		if b.kind != kindPlain {
			req.Header.Set("Prefer", "respond-async")
		}
		now := time.Now()
		if b.attempts == 0 {
			b.sent = now
		}
		b.attempts++
		resp, err := client.Do(req)
		if err != nil {
			b.finish(outError, err.Error())
			return
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m struct {
			Error       string    `json:"error"`
			RedirectURL string    `json:"redirectUrl"`
			Position    int       `json:"position"`
			QueuedAt    time.Time `json:"queued_at"`
		}
		json.Unmarshal(raw, &m)
		switch {
		case resp.StatusCode == http.StatusOK && m.RedirectURL != "":
			b.orderID = orderIDOf(m.RedirectURL)
			b.finish(outPlaced, "")
			return
		case resp.StatusCode == http.StatusAccepted:
			b.ticket, b.queuedAt, b.position = resp.Header.Get("Location"), m.QueuedAt, m.Position
			if b.kind == kindLeaver {
				b.finish(outLeft, "")
				return
			}
			b.follow(ctx, client, base)
			return
		case resp.StatusCode == http.StatusTooManyRequests && m.Error == "order_queued":
			b.finish(outWithdrawn, "429 order_queued")
			return
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
			code := fmt.Sprintf("%d %s", resp.StatusCode, m.Error)
			if b.kind == kindLeaver || b.attempts > *retries {
				b.finish(outRefused, code)
				return
			}
			wait := *retryCap
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
				wait = min(wait, time.Duration(s)*time.Second)
			}
			select {
			case <-ctx.Done():
				b.finish(outError, "the phase ended while retrying after "+code)
				return
			case <-time.After(wait):
			}
		default:
			b.finish(outFailed, fmt.Sprintf("%d %s", resp.StatusCode, oneLine(raw)))
			return
		}
	}
}

// follow polls the ticket every -poll-min to -poll-max until its outcome.
func (b *buyer) follow(ctx context.Context, client *http.Client, base string) {
	for {
		wait := *pollMin + time.Duration(b.rng.Int64N(int64(*pollMax-*pollMin)+1))
		select {
		case <-ctx.Done():
			b.finish(outError, "still waiting when the phase ended")
			return
		case <-time.After(wait):
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", base+b.ticket, nil)
		req.Header.Set("Accept", "application/json")
		b.polls++
		resp, err := client.Do(req)
		if err != nil {
			continue // a real page polls again
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var t struct {
			Status      string `json:"status"`
			Reason      string `json:"reason"`
			Error       string `json:"error"`
			RedirectURL string `json:"redirectUrl"`
		}
		if json.Unmarshal(raw, &t) != nil {
			b.finish(outError, fmt.Sprintf("ticket %d %s", resp.StatusCode, oneLine(raw)))
			return
		}
		switch t.Status {
		case "queued", "sending":
			continue
		case "placed":
			b.orderID = orderIDOf(t.RedirectURL)
			b.finish(outPlaced, "")
		case "withdrawn":
			b.finish(outWithdrawn, "ticket withdrawn ("+t.Reason+")")
		case "failed":
			b.finish(outFailed, fmt.Sprintf("ticket %d %s", resp.StatusCode, t.Error))
		default:
			b.finish(outError, fmt.Sprintf("ticket %d %s", resp.StatusCode, oneLine(raw)))
		}
		return
	}
}

func (b *buyer) finish(outcome, detail string) {
	b.done, b.outcome, b.detail = time.Now(), outcome, detail
}

// orderIDOf is the orderId of a cart redirect URL, 0 if none.
func orderIDOf(redirect string) int64 {
	u, err := url.Parse(redirect)
	if err != nil {
		return 0
	}
	id, _ := strconv.ParseInt(u.Query().Get("orderId"), 10, 64)
	return id
}

func oneLine(b []byte) string {
	return strings.Join(strings.Fields(string(b[:min(len(b), 160)])), " ")
}
