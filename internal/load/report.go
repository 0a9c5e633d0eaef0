package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Report is what a run measured. Times are taken on this machine: an
// order's final time is when the answer carrying its final status arrived,
// an upper bound of when it really left PENDING.
type Report struct {
	Config Config // as run: Stock resolved, APIKey removed

	Sent     int // POSTs that were answered or failed; not those cut off by a stop
	Accepted int // POSTs answered 202

	// Errors counts the failed POSTs by kind: the HTTP status ("500") or
	// "no response"; ErrorDetails holds the first message of each kind.
	Errors       map[string]int
	ErrorDetails map[string]string
	// WaitErrors and WaitErrorDetails are the same for the GETs that
	// follow accepted orders.
	WaitErrors       map[string]int
	WaitErrorDetails map[string]string

	AcceptLatency Summary       // from sending a POST to its 202, over the accepted orders
	AcceptSpan    time.Duration // from sending the first POST to the last 202

	Converged    int           // accepted orders seen in a final state
	ConvergeSpan time.Duration // from sending the first POST to the last final answer
	ToFinal      Summary       // from sending a POST to its final answer, over the converged orders

	// Outcome counts the accepted orders by the last status seen; PENDING
	// includes those never seen final.
	Outcome map[string]int

	Stopped string        // why the run ended early: "" if it did not
	Elapsed time.Duration // the whole run, stock setup included
}

// report sums the records up.
func (r *runner) report(recs []record, waitErrs *tally, elapsed time.Duration) Report {
	cfg := r.cfg
	cfg.APIKey = ""
	rep := Report{
		Config:           cfg,
		Errors:           map[string]int{},
		ErrorDetails:     map[string]string{},
		WaitErrors:       waitErrs.counts,
		WaitErrorDetails: waitErrs.first,
		Outcome:          map[string]int{"CONFIRMED": 0, "REJECTED": 0, "CANCELLED": 0, pending: 0},
		Elapsed:          elapsed,
	}
	if rep.WaitErrors == nil {
		rep.WaitErrors, rep.WaitErrorDetails = map[string]int{}, map[string]string{}
	}
	var (
		first, lastAccepted, lastFinal time.Time
		latencies, toFinal             []time.Duration
	)
	for i := range recs {
		rec := &recs[i]
		if !rec.done {
			continue
		}
		rep.Sent++
		if first.IsZero() || rec.sent.Before(first) {
			first = rec.sent
		}
		if rec.failure != "" {
			rep.Errors[rec.failure]++
			if _, ok := rep.ErrorDetails[rec.failure]; !ok {
				rep.ErrorDetails[rec.failure] = rec.detail
			}
			continue
		}
		rep.Accepted++
		latencies = append(latencies, rec.accepted.Sub(rec.sent))
		if rec.accepted.After(lastAccepted) {
			lastAccepted = rec.accepted
		}
		rep.Outcome[rec.status]++
		if rec.status == pending {
			continue
		}
		rep.Converged++
		toFinal = append(toFinal, rec.final.Sub(rec.sent))
		if rec.final.After(lastFinal) {
			lastFinal = rec.final
		}
	}
	rep.AcceptLatency, rep.ToFinal = Summarize(latencies), Summarize(toFinal)
	if rep.Accepted > 0 {
		rep.AcceptSpan = lastAccepted.Sub(first)
	}
	if rep.Converged > 0 {
		rep.ConvergeSpan = lastFinal.Sub(first)
	}
	return rep
}

// NotSent is the number of orders not sent because the run stopped.
func (rep Report) NotSent() int { return rep.Config.Orders - rep.Sent }

// Pending is the number of accepted orders not seen leaving PENDING.
func (rep Report) Pending() int { return rep.Outcome[pending] }

// Failed is the number of failed requests, POSTs and GETs.
func (rep Report) Failed() int { return sum(rep.Errors) + sum(rep.WaitErrors) }

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
	line("target", "%s  %d workers placing orders, %d following them", c.URL, c.Concurrency, c.Concurrency)
	line("stock", "LOAD-1..LOAD-%d with %d units available each; an order takes 1..%d of them, 1..%d units each",
		c.SKUs, c.Stock, c.Items, maxQuantity)
	orders := fmt.Sprintf("%d sent, %d accepted (202), %d errors", rep.Sent, rep.Accepted, sum(rep.Errors))
	if n := rep.NotSent(); n > 0 {
		orders += fmt.Sprintf(", %d not sent", n)
	}
	line("orders", "%s", orders)
	if rep.Accepted > 0 {
		line("accept", "%s orders/s   latency %s", fmtRate(rep.AcceptRate()), rep.AcceptLatency)
	} else {
		line("accept", "-")
	}
	if rep.Converged > 0 {
		line("converged", "%d of %d in %s after the first order  (%s orders/s end to end)",
			rep.Converged, rep.Accepted, fmtDur(rep.ConvergeSpan), fmtRate(rep.EndToEndRate()))
	} else {
		line("converged", "0 of %d", rep.Accepted)
	}
	line("order->final", "%s", rep.ToFinal)

	statuses := []string{"CONFIRMED", "REJECTED", "CANCELLED", pending}
	for _, s := range slices.Sorted(maps.Keys(rep.Outcome)) {
		if !slices.Contains(statuses, s) {
			statuses = append(statuses, s)
		}
	}
	var outcome []string
	for _, s := range statuses {
		outcome = append(outcome, fmt.Sprintf("%s %d", s, rep.Outcome[s]))
	}
	line("outcome", "%s", strings.Join(outcome, "  "))

	for _, e := range []struct {
		label   string
		counts  map[string]int
		details map[string]string
	}{{"errors", rep.Errors, rep.ErrorDetails}, {"wait errors", rep.WaitErrors, rep.WaitErrorDetails}} {
		for _, k := range slices.Sorted(maps.Keys(e.counts)) {
			line(e.label, "%s   first: %s", kinds(map[string]int{k: e.counts[k]}), e.details[k])
		}
	}
	if rep.Stopped != "" {
		line("stopped", "%s after %s", rep.Stopped, fmtDur(rep.Elapsed))
	}
	line("note", "order->final runs from sending the POST to receiving a GET ?wait=%s answer with the final status,", waitFor)
	line("", "an upper bound of the true time to converge")
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtRate(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}
