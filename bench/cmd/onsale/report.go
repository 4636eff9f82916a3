package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/s360edge/s360edge/bench/internal/machine"
)

// placement is a placed order: when its buyer arrived, and the orderId
// the simulator gave it.
type placement struct {
	at time.Time
	id int64
}

// fifo measures how far the simulator's orderIds stray from arrival
// order. ps are the placed orders sorted by arrival. An inversion is a
// pair i < j with ps[i].id > ps[j].id: the later arrival got the lower
// orderId. Pairs that arrived less than tie apart are ties, not compared:
// neither buyer came first. pairs counts the pairs compared; ahead the
// orders j placed ahead of at least one earlier arrival (an inversion of
// theirs); inverted lists the inverted pairs (i, j).
func fifo(ps []placement, tie time.Duration) (inv, pairs, ties, ahead int, inverted [][2]int) {
	for j := range ps {
		isAhead := false
		for i := range j {
			if ps[j].at.Sub(ps[i].at) < tie {
				ties++
				continue
			}
			pairs++
			if ps[i].id > ps[j].id {
				inv++
				isAhead = true
				inverted = append(inverted, [2]int{i, j})
			}
		}
		if isAhead {
			ahead++
		}
	}
	return inv, pairs, ties, ahead, inverted
}

// pct is the nearest-rank percentile p (0-1] of sorted d.
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(d)))) - 1
	return d[min(max(k, 0), len(d)-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

// summary is what a phase comes to.
type summary struct {
	kinds                   map[string]int
	posts                   int
	retried                 int // buyers who posted more than once
	placedOrders            int // distinct buyer references in /_sim/orders
	orders                  int // all orders in /_sim/orders
	dupes                   []string
	byOutcome               map[string]int
	refusals                map[string]int // code → buyers
	withdrawnHow            map[string]int
	leftPlaced, leftOther   int
	leftHow                 map[string]int
	waits                   []time.Duration
	lastPlaced              time.Duration
	inv, pairs, ties, ahead int
	arrivalPairs, arrivalX  int      // pairs of tickets compared, and how many disagree (send order vs queued_at)
	qInv, qPairs            int      // FIFO inversions by the sidecar's arrival order (queued_at), orders with a ticket
	inverted                []string // the first inverted pairs, described
	invTickets, invLate     int      // inverted pairs of two orders with a ticket; of those, the later sender queued first (queued_at)
	failures                []string
}

func summarize(r *phaseResult) summary {
	s := summary{kinds: map[string]int{}, byOutcome: map[string]int{}, refusals: map[string]int{},
		withdrawnHow: map[string]int{}, leftHow: map[string]int{}}
	idOf := map[string]int64{}
	seen := map[string]int{}
	for _, o := range r.orders {
		s.orders++
		seen[o.Ref]++
		if seen[o.Ref] == 2 {
			s.dupes = append(s.dupes, o.Ref)
		}
		if id, ok := idOf[o.Ref]; !ok || o.OrderID < id {
			idOf[o.Ref] = o.OrderID
		}
	}
	arrival := slices.Clone(r.buyers)
	slices.SortStableFunc(arrival, func(a, b *buyer) int { return a.sent.Compare(b.sent) })
	var placed []*buyer // in arrival order
	for _, b := range arrival {
		s.kinds[b.kind]++
		s.posts += b.attempts
		if b.attempts > 1 {
			s.retried++
		}
		s.byOutcome[b.outcome]++
		switch b.outcome {
		case outPlaced:
			w := b.done.Sub(b.sent)
			s.waits = append(s.waits, w)
			s.lastPlaced = max(s.lastPlaced, b.done.Sub(r.t0))
		case outRefused:
			s.refusals[b.detail]++
		case outWithdrawn:
			s.withdrawnHow[b.detail]++
		case outLeft:
			s.leftHow[b.leftOutcome]++
		case outFailed, outError:
			s.failures = append(s.failures, b.ref()+": "+b.detail)
		}
		if _, ok := idOf[b.ref()]; ok {
			placed = append(placed, b)
			if b.outcome == outLeft {
				s.leftPlaced++
			}
		} else if b.outcome == outLeft {
			s.leftOther++
		}
	}
	s.placedOrders = len(placed)
	slices.Sort(s.waits)
	ps := make([]placement, len(placed))
	for k, b := range placed {
		ps[k] = placement{b.sent, idOf[b.ref()]}
	}
	var inverted [][2]int
	s.inv, s.pairs, s.ties, s.ahead, inverted = fifo(ps, *tie)
	at := func(b *buyer) string {
		q := "no ticket"
		if !b.queuedAt.IsZero() {
			q = fmt.Sprintf("queued_at +%.4f s", b.queuedAt.Sub(r.t0).Seconds())
		}
		return fmt.Sprintf("%s (sent +%.4f s, %s, orderId %d)", b.ref(), b.sent.Sub(r.t0).Seconds(), q, idOf[b.ref()])
	}
	for _, p := range inverted {
		a, b := placed[p[0]], placed[p[1]]
		if len(s.inverted) < 5 {
			s.inverted = append(s.inverted, at(a)+" then "+at(b))
		}
		if !a.queuedAt.IsZero() && !b.queuedAt.IsZero() {
			s.invTickets++
			if b.queuedAt.Before(a.queuedAt) {
				s.invLate++ // the later sender reached the sidecar first
			}
		}
	}
	// The same, in the order the sidecar saw the orders arrive: the
	// queue's own FIFO, whatever the buyers' sending.
	var qs []placement
	for _, b := range placed {
		if !b.queuedAt.IsZero() {
			qs = append(qs, placement{b.queuedAt, idOf[b.ref()]})
		}
	}
	slices.SortStableFunc(qs, func(a, b placement) int { return a.at.Compare(b.at) })
	s.qInv, s.qPairs, _, _, _ = fifo(qs, 0)
	// Does the sidecar see the buyers in the order they sent? Compared
	// on the tickets' queued_at (a 202's), pair by pair.
	var tickets []*buyer
	for _, b := range arrival {
		if !b.queuedAt.IsZero() {
			tickets = append(tickets, b)
		}
	}
	for j := range tickets {
		for i := range j {
			s.arrivalPairs++
			if tickets[i].queuedAt.After(tickets[j].queuedAt) {
				s.arrivalX++
			}
		}
	}
	return s
}

func writeReport(w io.Writer, results []*phaseResult, loadStart string) {
	fmt.Fprintf(w, "## make onsale — an on-sale spike of orders, with and without the order queue\n\n")
	fmt.Fprintf(w, "Generated by `make onsale` (bench/cmd/onsale) on %s; %s, %d CPUs (%s), shared with other work; load average at start %s. Code measured: commit %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine.Host(), machine.NumCPU(), machine.CPUModel(), loadStart, commit())
	nPlain := int(float64(*buyers)**plain + 0.5)
	nLeave := int(float64(*buyers-nPlain)**leave + 0.5)
	fmt.Fprintf(w, "Setup: for each phase a fresh `s360sim -rate-limit %d` (S-360's default: %d calls a minute for the institution, fixed windows on the minute, 509 beyond) "+
		"and a fresh `s360edge` with `%s`: `rate_limit %d 1m` (the sidecar's share of the institution's calls), `client_quota off`, `order_queue on|off` (one phase each), "+
		"`order_queue_per_client 100000` (every buyer comes from 127.0.0.1), **`abandon_after 30s`** (the default is 2m; lowered so that a run stays short), "+
		"and the defaults `order_hold 2s`, `order_wait 30s`, setup and updates polls every minute (the updates poll makes no call here: no catalog is cached). "+
		"Queued orders never use the watchers' reserve (docs/ORDERS.md); orders sent without the queue may. The spike starts %s after the sidecar answers. Command: `%s`.\n\n",
		*simLimit, *simLimit, *caddyfile, *limit, *settle, command())
	fmt.Fprintf(w, "Buyers: %d, each posting one order (createOrUpdateOrder, `Accept: application/json`, one ticket of the same performance, whose stock is set to %d, "+
		"`externalReference` \"buyer-NNNN\"). Buyer i sends its first POST at i × %s/%d after the spike starts (one loop starts the buyers in turn: later under load, never out of turn; each buyer's keep-alive connection is opened before the spike, with a `GET /`); the arrival order is known, and is the order of the recorded send times. "+
		"Mix (seed %d, the same buyers in both phases): %d plain API clients without `Prefer` (%.0f %%: they wait in person; past `order_wait` the answer is `429 order_queued` and the order is withdrawn, final for the buyer); "+
		"%d async buyers sending `Prefer: respond-async` who, on `202`, poll `Location` every %s-%s until the outcome; "+
		"%d of the async buyers (%.0f %%) leave right after their `202` and never poll (without the queue, where there is no `202`, they leave after their first refusal). "+
		"A buyer refused otherwise (another `429`, or `503`) tries again by hand after `Retry-After`, capped at %s, up to %d times; *refused* is a buyer's last such answer.\n\n",
		*buyers, 2**buyers, *spike, *buyers, *seed, nPlain, *plain*100, *buyers-nPlain, *pollMin, *pollMax, nLeave, *leave*100, *retryCap, *retries)
	fmt.Fprintf(w, "Definitions. *Orders placed*: distinct `externalReference`s in the simulator's `/_sim/orders`; *placed once*: no reference there twice. "+
		"*Wait*: from a buyer's first POST to the moment it learns its order is placed (the `200`, or the poll that reads `placed`, so up to %s late), for the buyers who stayed. "+
		"*FIFO inversions*: the placed orders taken in arrival order; an inversion is a pair i < j (i arrived first) whose simulator orderIds are in the other order (orderId_i > orderId_j), "+
		"counted out of the pairs compared: all n(n-1)/2 pairs but the *ties*, two buyers whose first POSTs were less than %s apart (neither came first: the loop that starts the buyers may run late under load and start several at once). "+
		"The fraction inverted is the normalised Kendall distance; Kendall's τ = 1 − 2 × fraction. "+
		"*placed ahead of an earlier arrival*: orders j that make an inversion with some buyer i < j. The same inversions are also counted in the order the sidecar saw the orders arrive (the `queued_at` of each `202`, so only orders placed after a `202`): the queue's own FIFO, apart from the buyers' sending.\n\n",
		*pollMax, *tie)

	var ok []*phaseResult
	var sums []summary
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "**order_queue %s failed:** %v\n\n", r.queue, r.err)
			continue
		}
		ok = append(ok, r)
		sums = append(sums, summarize(r))
	}
	if len(ok) == 0 {
		return
	}
	row := func(name string, f func(r *phaseResult, s summary) string) {
		fmt.Fprintf(w, "| %s |", name)
		for i, r := range ok {
			fmt.Fprintf(w, " %s |", f(r, sums[i]))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "| |")
	for _, r := range ok {
		fmt.Fprintf(w, " order_queue %s |", r.queue)
	}
	fmt.Fprintf(w, "\n| --- |%s\n", strings.Repeat(" --- |", len(ok)))
	row("buyers: async / plain / leaving", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("%d / %d / %d", s.kinds[kindAsync], s.kinds[kindPlain], s.kinds[kindLeaver])
	})
	row("first POSTs sent over", func(r *phaseResult, _ summary) string {
		first, last := r.buyers[0].sent, r.buyers[0].sent
		for _, b := range r.buyers {
			first, last = minTime(first, b.sent), maxTime(last, b.sent)
		}
		return fmt.Sprintf("%s s", secs(last.Sub(first)))
	})
	row("POSTs in all (buyers who posted again)", func(_ *phaseResult, s summary) string { return fmt.Sprintf("%d (%d)", s.posts, s.retried) })
	row("**orders placed** (distinct in /_sim/orders)", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("**%d** of %d", s.placedOrders, *buyers)
	})
	row("each placed once", func(_ *phaseResult, s summary) string {
		if len(s.dupes) == 0 {
			return fmt.Sprintf("yes (%d orders, %d references)", s.orders, s.placedOrders)
		}
		return fmt.Sprintf("**NO**: %d orders, twice: %s", s.orders, strings.Join(s.dupes, ", "))
	})
	row("**refused** (final 429/503 to the buyer)", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("**%d**%s", s.byOutcome[outRefused], codes(s.refusals))
	})
	row("**withdrawn** (429 order_queued)", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("**%d**%s", s.byOutcome[outWithdrawn], codes(s.withdrawnHow))
	})
	row("**abandoned** (/s360/stats order_queue.abandoned)", func(r *phaseResult, _ summary) string { return fmt.Sprintf("**%d**", r.stats.Edges[0].Queue.Abandoned) })
	row("buyers who left after a 202: their order placed / not", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("%d / %d%s", s.leftPlaced, s.leftOther, codes(s.leftHow))
	})
	row("failed or errors", func(_ *phaseResult, s summary) string {
		if len(s.failures) == 0 {
			return "0"
		}
		return fmt.Sprintf("%d: %s", len(s.failures), strings.Join(s.failures[:min(len(s.failures), 5)], "; "))
	})
	row("**simulator 509s**", func(r *phaseResult, _ summary) string { return fmt.Sprintf("**%d**", r.counters.Statuses["509"]) })
	row("wait to placed, p50 / p90 / p99 / max (s)", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("%s / %s / %s / %s (%d buyers)", secs(pct(s.waits, 0.5)), secs(pct(s.waits, 0.9)), secs(pct(s.waits, 0.99)), secs(pct(s.waits, 1)), len(s.waits))
	})
	row("**FIFO inversions** (of the pairs compared; ties)", func(_ *phaseResult, s summary) string {
		if s.pairs == 0 {
			return "no pairs"
		}
		f := float64(s.inv) / float64(s.pairs)
		late := ""
		if s.invTickets > 0 {
			late = fmt.Sprintf("; of the %d inverted pairs of two orders with a ticket, in %d the later sender reached the sidecar first (`queued_at`)", s.invTickets, s.invLate)
		}
		return fmt.Sprintf("**%d** of %d (%.3f; τ = %.3f); %d ties%s", s.inv, s.pairs, f, 1-2*f, s.ties, late)
	})
	row("FIFO inversions by the sidecar's arrival (`queued_at` of the orders placed after a 202)", func(_ *phaseResult, s summary) string {
		if s.qPairs == 0 {
			return "no tickets"
		}
		return fmt.Sprintf("%d of %d", s.qInv, s.qPairs)
	})
	row("placed ahead of an earlier arrival", func(_ *phaseResult, s summary) string { return fmt.Sprintf("%d of %d", s.ahead, s.placedOrders) })
	row("last buyer learned its order placed", func(_ *phaseResult, s summary) string {
		return fmt.Sprintf("%s s after the spike began", secs(s.lastPlaced))
	})
	row("phase (until every buyer's outcome; line empty)", func(r *phaseResult, _ summary) string {
		return fmt.Sprintf("%s s; %s s", secs(r.wall), secs(r.drained))
	})
	row("load average before / after", func(r *phaseResult, _ summary) string { return r.loadBefore + " / " + r.loadAfter })
	fmt.Fprintln(w)

	for i, r := range ok {
		s := sums[i]
		q, bd := r.stats.Edges[0].Queue, r.stats.Edges[0].Budget
		fmt.Fprintf(w, "**order_queue %s.** Outcomes by kind of buyer: ", r.queue)
		var parts []string
		for _, k := range []string{kindAsync, kindPlain, kindLeaver} {
			n := map[string]int{}
			for _, b := range r.buyers {
				if b.kind == k {
					n[b.outcome]++
				}
			}
			parts = append(parts, k+codes(n))
		}
		fmt.Fprintf(w, "%s. ", strings.Join(parts, "; "))
		if r.queue != "off" || q.Enqueued > 0 {
			fmt.Fprintf(w, "Order queue (/s360/stats): enqueued %d, admitted %d, placed %d, failed %d, withdrawn %d, abandoned %d, refused %d. ",
				q.Enqueued, q.Admitted, q.Placed, q.Failed, q.Withdrawn, q.Abandoned, q.Refused)
		}
		fmt.Fprintf(w, "Budget: effective limit %d (watch reserve %d, order reserve %d), granted %d, waits %d, rejections %d, pushbacks %d, pauses %d. ",
			bd.EffectiveLimit, bd.WatchReserve, bd.OrderReserve, bd.Granted, bd.Waits, bd.Rejections, bd.Pushbacks, bd.Pauses)
		var methods []string
		for m, n := range r.counters.Calls {
			if n > 0 {
				methods = append(methods, fmt.Sprintf("%s %d", m, n))
			}
		}
		slices.Sort(methods)
		fmt.Fprintf(w, "Simulator: %d calls (%d rate-limited): %s.", r.counters.Total, r.counters.RateLimited, strings.Join(methods, ", "))
		if s.arrivalPairs > 0 {
			fmt.Fprintf(w, " Arrival at the sidecar (the `202`s' `queued_at`) against the send order: %d of %d pairs of tickets disagree.", s.arrivalX, s.arrivalPairs)
		}
		if len(s.inverted) > 0 {
			fmt.Fprintf(w, " Inverted pairs (arrival order, first %d of %d): %s.", len(s.inverted), s.inv, strings.Join(s.inverted, "; "))
		}
		fmt.Fprintf(w, "\n\n")
	}
}

// command is this run's command line with every flag's value, the
// output's and the binaries' places left out.
func command() string {
	out := []string{"bench/bin/onsale"}
	flag.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case "bin", "md", "section", "keep":
			return
		}
		out = append(out, "-"+f.Name+" "+f.Value.String())
	})
	return strings.Join(out, " ")
}

// codes is " (a 3, b 1)" for the counts in m, sorted, or "".
func codes(m map[string]int) string {
	var out []string
	for k, n := range m {
		if n > 0 {
			out = append(out, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(out) == 0 {
		return ""
	}
	slices.Sort(out)
	return " (" + strings.Join(out, ", ") + ")"
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
