package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is what a run measured. The 202's latency is taken on this
// machine; an order's time to its final state is the order service's own:
// from its created_at to the updated_at of the answer that made it
// CONFIRMED or REJECTED.
type Report struct {
	Config Config // as run: Stock resolved, APIKey removed

	// Planned is how many orders the run meant to place: Config.Orders,
	// or as many as were due before Config.Duration ran out.
	Planned  int
	Sent     int // POSTs that were answered or failed; not those cut off by a stop
	Accepted int // POSTs answered 202

	// Errors counts the failed POSTs by kind: the HTTP status ("500") or
	// "no response"; ErrorDetails holds the first message of each kind.
	Errors       map[string]int
	ErrorDetails map[string]string
	// WaitErrors and WaitErrorDetails are the same for the GETs that
	// follow accepted orders, CancelErrors for the cancels.
	WaitErrors         map[string]int
	WaitErrorDetails   map[string]string
	CancelErrors       map[string]int
	CancelErrorDetails map[string]string

	AcceptLatency Summary       // from sending a POST to its 202, over the accepted orders
	AcceptSpan    time.Duration // from sending the first POST to the last 202

	Converged    int           // accepted orders seen in a final state
	ConvergeSpan time.Duration // from sending the first POST to the last final answer
	// ToFinal is the order service's time from created_at to the
	// updated_at of CONFIRMED or REJECTED, over the orders inventory
	// decided (not those the run cancelled).
	ToFinal Summary
	// SeenFinal is, over the same orders, the client's time from sending
	// the POST to receiving an answer with the final status: an upper
	// bound, longer when the followers lag.
	SeenFinal Summary

	// Outcome counts the accepted orders by the last status seen; PENDING
	// includes those never seen final. Reasons counts the REJECTED ones by
	// reason.
	Outcome map[string]int
	Reasons map[string]int

	UnknownSKU int // orders sent with a SKU that does not exist
	// Cancels counts the cancels sent, and those answered 409 because
	// inventory had rejected the order first.
	Cancels, CancelsTooLate int

	// Open model only: the orders started more than 10 ms after they were
	// due, and the latest start; past 100 ms the client fell behind its
	// schedule.
	Late    int
	MaxLate time.Duration

	Orders []OrderFigures // one per order handed out, in order

	Stopped string        // why the run ended early: "" if it did not
	Elapsed time.Duration // the whole run, stock setup included
}

// OrderFigures are the raw figures of one order. Times are offsets from
// the start of placing (the first order's due or sent time).
type OrderFigures struct {
	N          int           `json:"n"`
	ID         string        `json:"id,omitempty"`
	UnknownSKU bool          `json:"unknown_sku,omitempty"`
	Cancel     bool          `json:"cancel,omitempty"`
	Due        time.Duration `json:"due_ns,omitempty"`  // open model
	Sent       time.Duration `json:"sent_ns,omitempty"` // 0 and Failure "not sent" if it never was
	Failure    string        `json:"failure,omitempty"` // why the POST failed
	Accept     time.Duration `json:"accept_ns,omitempty"`
	Status     string        `json:"status,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	CreatedAt  time.Time     `json:"created_at,omitzero"` // the order service's
	UpdatedAt  time.Time     `json:"updated_at,omitzero"`
	ToFinal    time.Duration `json:"to_final_ns,omitempty"` // UpdatedAt - CreatedAt, for an order inventory decided
	SeenFinal  time.Duration `json:"seen_final_ns,omitempty"`
}

// decided reports whether inventory's answer made the order final: it is
// CONFIRMED or REJECTED (so not cancelled by the run) with both timestamps.
func (rec *record) decided() bool {
	return (rec.status == "CONFIRMED" || rec.status == "REJECTED") && !rec.created.IsZero() && !rec.updated.IsZero()
}

// report sums the records up.
func (r *runner) report(recs []*record, planned int, elapsed time.Duration) Report {
	cfg := r.cfg
	cfg.APIKey = ""
	rep := Report{
		Config:             cfg,
		Planned:            planned,
		Errors:             map[string]int{},
		ErrorDetails:       map[string]string{},
		WaitErrors:         r.waitErrs.counts,
		WaitErrorDetails:   r.waitErrs.first,
		CancelErrors:       r.cancelErrs.counts,
		CancelErrorDetails: r.cancelErrs.first,
		Outcome:            map[string]int{"CONFIRMED": 0, "REJECTED": 0, "CANCELLED": 0, pending: 0},
		Reasons:            map[string]int{},
		Orders:             make([]OrderFigures, 0, len(recs)),
		Elapsed:            elapsed,
	}
	if rep.WaitErrors == nil {
		rep.WaitErrors, rep.WaitErrorDetails = map[string]int{}, map[string]string{}
	}
	if rep.CancelErrors == nil {
		rep.CancelErrors, rep.CancelErrorDetails = map[string]int{}, map[string]string{}
	}
	var (
		first, lastAccepted, lastFinal time.Time
		latencies, toFinal, seenFinal  []time.Duration
	)
	for _, rec := range recs {
		if rec.done && (first.IsZero() || rec.sent.Before(first)) {
			first = rec.sent
		}
		if !rec.due.IsZero() && (first.IsZero() || rec.due.Before(first)) {
			first = rec.due
		}
	}
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return 0
		}
		return t.Sub(first)
	}
	for _, rec := range recs {
		fig := OrderFigures{N: rec.n, ID: rec.id, UnknownSKU: rec.unknown, Cancel: rec.cancel, Due: since(rec.due),
			Failure: rec.failure, Status: rec.status, Reason: rec.reason, CreatedAt: rec.created, UpdatedAt: rec.updated}
		if !rec.done {
			fig.Failure = "not sent"
			rep.Orders = append(rep.Orders, fig)
			continue
		}
		fig.Sent = since(rec.sent)
		rep.Sent++
		if rec.unknown {
			rep.UnknownSKU++
		}
		if late := rec.sent.Sub(rec.due); !rec.due.IsZero() && late > lateAfter {
			rep.Late++
			rep.MaxLate = max(rep.MaxLate, late)
		}
		if rec.failure != "" {
			rep.Errors[rec.failure]++
			if _, ok := rep.ErrorDetails[rec.failure]; !ok {
				rep.ErrorDetails[rec.failure] = rec.detail
			}
			rep.Orders = append(rep.Orders, fig)
			continue
		}
		rep.Accepted++
		fig.Accept = rec.accepted.Sub(rec.sent)
		latencies = append(latencies, fig.Accept)
		if rec.accepted.After(lastAccepted) {
			lastAccepted = rec.accepted
		}
		if rec.cancel && (rec.cancelStatus != 0 || rec.status != pending) {
			rep.Cancels++
			if rec.cancelStatus == 409 {
				rep.CancelsTooLate++
			}
		}
		rep.Outcome[rec.status]++
		if rec.status == "REJECTED" {
			rep.Reasons[rec.reason]++
		}
		if rec.status != pending {
			rep.Converged++
			if rec.seen.After(lastFinal) {
				lastFinal = rec.seen
			}
		}
		if rec.decided() {
			fig.ToFinal = rec.updated.Sub(rec.created)
			fig.SeenFinal = rec.seen.Sub(rec.sent)
			toFinal = append(toFinal, fig.ToFinal)
			seenFinal = append(seenFinal, fig.SeenFinal)
		}
		rep.Orders = append(rep.Orders, fig)
	}
	rep.AcceptLatency, rep.ToFinal, rep.SeenFinal = Summarize(latencies), Summarize(toFinal), Summarize(seenFinal)
	if rep.Accepted > 0 {
		rep.AcceptSpan = lastAccepted.Sub(first)
	}
	if rep.Converged > 0 {
		rep.ConvergeSpan = lastFinal.Sub(first)
	}
	return rep
}

// NotSent is the number of orders not sent because the run stopped.
func (rep Report) NotSent() int { return rep.Planned - rep.Sent }

// Pending is the number of accepted orders not seen leaving PENDING.
func (rep Report) Pending() int { return rep.Outcome[pending] }

// Failed is the number of failed requests, POSTs and GETs.
func (rep Report) Failed() int {
	return sum(rep.Errors) + sum(rep.WaitErrors) + sum(rep.CancelErrors)
}

// AcceptRate is accepted orders per second, from the first POST to the
// last 202; 0 if not measurable.
func (rep Report) AcceptRate() float64 { return rate(rep.Accepted, rep.AcceptSpan) }

// EndToEndRate is converged orders per second, from the first POST to the
// last final answer; 0 if not measurable.
func (rep Report) EndToEndRate() float64 { return rate(rep.Converged, rep.ConvergeSpan) }

func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// verdict is nil for a run that passed, else a one-line *RunError.
func (rep Report) verdict(stopErr error) error {
	var parts []string
	if n := sum(rep.Errors); n > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d orders failed (%s)", n, rep.Sent, kinds(rep.Errors)))
	}
	if n := sum(rep.WaitErrors); n > 0 {
		parts = append(parts, fmt.Sprintf("%d waits for an outcome failed (%s)", n, kinds(rep.WaitErrors)))
	}
	if n := sum(rep.CancelErrors); n > 0 {
		parts = append(parts, fmt.Sprintf("%d cancels failed (%s)", n, kinds(rep.CancelErrors)))
	}
	if n := rep.Pending(); n > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d accepted orders still PENDING", n, rep.Accepted))
	}
	if n := rep.NotSent(); n > 0 {
		parts = append(parts, fmt.Sprintf("%d orders not sent", n))
	}
	if rep.Stopped != "" {
		parts = append([]string{fmt.Sprintf("%s after %s", rep.Stopped, fmtDur(rep.Elapsed))}, parts...)
	}
	if len(parts) == 0 {
		return nil
	}
	return &RunError{msg: "load: " + strings.Join(parts, "; "), cause: stopErr}
}

// kinds renders error counts as "HTTP 500 x3, no response x1".
func kinds(m map[string]int) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := k
		if k != "" && k[0] >= '0' && k[0] <= '9' && len(k) == 3 {
			name = "HTTP " + k
		}
		out = append(out, fmt.Sprintf("%s x%d", name, m[k]))
	}
	return strings.Join(out, ", ")
}

// Print writes the report as a few aligned lines.
func (rep Report) Print(w io.Writer) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-13s %s\n", label, fmt.Sprintf(format, args...))
	}
	c := rep.Config
	if c.Rate > 0 {
		line("target", "%s  open model: %s orders/s on a schedule, %d following them", c.URL, fmtRate(c.Rate), c.Concurrency)
	} else {
		line("target", "%s  closed model: %d workers placing orders, %d following them", c.URL, c.Concurrency, c.Concurrency)
	}
	line("stock", "LOAD-1..LOAD-%d with %d units available each; an order takes 1..%d of them, 1..%d units each",
		c.SKUs, c.Stock, c.Items, maxQuantity)
	if c.CancelRatio > 0 || c.UnknownSKURatio > 0 {
		line("mix", "%d orders with an unknown SKU (%s), %d cancelled at once (%s), %d of those too late: already REJECTED",
			rep.UnknownSKU, pct(c.UnknownSKURatio), rep.Cancels, pct(c.CancelRatio), rep.CancelsTooLate)
	}
	accepted, answer := "202", "202"
	if c.PreferWait {
		accepted, answer = "201 or 202", "POST"
	}
	orders := fmt.Sprintf("%d sent, %d accepted (%s), %d errors", rep.Sent, rep.Accepted, accepted, sum(rep.Errors))
	if n := rep.NotSent(); n > 0 {
		orders += fmt.Sprintf(", %d not sent", n)
	}
	line("orders", "%s", orders)
	if c.Rate > 0 {
		switch {
		case rep.MaxLate > behindAfter:
			line("schedule", "BEHIND: %d orders started more than %s late, the latest by %s; the client could not keep %s/s",
				rep.Late, fmtDur(lateAfter), fmtDur(rep.MaxLate), fmtRate(c.Rate))
		case rep.Late > 0:
			line("schedule", "kept: %d orders started %s to %s late, none later", rep.Late, fmtDur(lateAfter), fmtDur(rep.MaxLate))
		default:
			line("schedule", "kept: every order started within %s of its time", fmtDur(lateAfter))
		}
	}
	if rep.Accepted > 0 {
		line("accept", "%s orders/s", fmtRate(rep.AcceptRate()))
	} else {
		line("accept", "-")
	}
	line(answer, "%s", rep.AcceptLatency)
	if rep.Converged > 0 {
		line("converged", "%d of %d in %s after the first order  (%s orders/s end to end)",
			rep.Converged, rep.Accepted, fmtDur(rep.ConvergeSpan), fmtRate(rep.EndToEndRate()))
	} else {
		line("converged", "0 of %d", rep.Accepted)
	}
	line("order->final", "%s", rep.ToFinal)
	line("seen final", "%s", rep.SeenFinal)

	statuses := []string{"CONFIRMED", "REJECTED", "CANCELLED", pending}
	for _, s := range slices.Sorted(maps.Keys(rep.Outcome)) {
		if !slices.Contains(statuses, s) {
			statuses = append(statuses, s)
		}
	}
	var outcome []string
	for _, s := range statuses {
		o := fmt.Sprintf("%s %d", s, rep.Outcome[s])
		if s == "REJECTED" && len(rep.Reasons) > 0 {
			var rs []string
			for _, r := range slices.Sorted(maps.Keys(rep.Reasons)) {
				name := r
				if name == "" {
					name = "no reason given"
				}
				rs = append(rs, fmt.Sprintf("%s %d", name, rep.Reasons[r]))
			}
			o += " (" + strings.Join(rs, ", ") + ")"
		}
		outcome = append(outcome, o)
	}
	line("outcome", "%s", strings.Join(outcome, "  "))

	for _, e := range []struct {
		label   string
		counts  map[string]int
		details map[string]string
	}{{"errors", rep.Errors, rep.ErrorDetails}, {"wait errors", rep.WaitErrors, rep.WaitErrorDetails}, {"cancel errors", rep.CancelErrors, rep.CancelErrorDetails}} {
		for _, k := range slices.Sorted(maps.Keys(e.counts)) {
			line(e.label, "%s   first: %s", kinds(map[string]int{k: e.counts[k]}), e.details[k])
		}
	}
	if rep.Stopped != "" {
		line("stopped", "%s after %s", rep.Stopped, fmtDur(rep.Elapsed))
	}
	line("note", "%s is measured here, from sending the POST to its answer; order->final is the order service's own,", answer)
	line("", "from created_at to the updated_at of CONFIRMED or REJECTED (cancelled orders left out); seen final")
	if c.PreferWait {
		line("", "is from sending the POST (Prefer: wait=%d) to the first answer with the final status, that POST's", int(waitFor/time.Second))
		line("", "or, where its wait ran out, a GET ?wait=%s's: an upper bound", waitFor)
	} else {
		line("", "is from sending the POST to a GET ?wait=%s answer with the final status, an upper bound", waitFor)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func pct(r float64) string { return fmt.Sprintf("%.3g%%", 100*r) }

func fmtRate(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}
