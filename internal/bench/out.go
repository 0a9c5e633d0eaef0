package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/convergehq/converge/internal/store"
)

// Files WriteFiles writes.
const (
	FileJSON = "bench.json"
	FileSVG  = "bench.svg"
)

// Figure is one line of the summary: a measure over the rounds.
type Figure struct {
	What   string    `json:"what"`
	Unit   string    `json:"unit"`
	Rounds []float64 `json:"rounds"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func figure(what, unit string, rounds []Round, of func(Round) float64) Figure {
	f := Figure{What: what, Unit: unit}
	for _, r := range rounds {
		f.Rounds = append(f.Rounds, of(r))
	}
	if len(f.Rounds) == 0 {
		return f
	}
	s := slices.Sorted(slices.Values(f.Rounds))
	f.Min, f.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		f.Median = s[n/2]
	} else {
		f.Median = (s[n/2-1] + s[n/2]) / 2
	}
	return f
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Figures sums the rounds up, in the order the summary prints them.
func (res Result) Figures() []Figure {
	rs := res.Rounds
	if res.Topology == Cluster {
		return res.clusterFigures()
	}
	chain := fmt.Sprintf("bare chain (lb + %d gateways + 202 stub)", res.Config.Gateways)
	return []Figure{
		figure(chain, "orders/s", rs, func(r Round) float64 { return r.Bare.Rate }),
		figure("converge "+res.Topology, "orders/s", rs, func(r Round) float64 { return r.Real.Rate }),
		figure("ratio converge / bare chain", "", rs, func(r Round) float64 { return r.Ratio }),
		figure("converge order -> final p50", "ms", rs, func(r Round) float64 { return ms(r.Real.ToFinalP50) }),
		figure("converge order -> final p99", "ms", rs, func(r Round) float64 { return ms(r.Real.ToFinalP99) }),
		figure("bare chain: machine CPU per order", "ms", rs, func(r Round) float64 { return ms(r.Bare.CPU.PerUnit) }),
		figure("bare chain: cores busy", "%", rs, func(r Round) float64 { return 100 * r.Bare.CPU.Busy }),
		figure("bare chain: machine context switches per order", "switches", rs, func(r Round) float64 { return r.Bare.CPU.SwitchesPerUnit }),
		figure("converge: machine CPU per order", "ms", rs, func(r Round) float64 { return ms(r.Real.CPU.PerUnit) }),
		figure("converge: cores busy", "%", rs, func(r Round) float64 { return 100 * r.Real.CPU.Busy }),
		figure("converge: machine context switches per order", "switches", rs, func(r Round) float64 { return r.Real.CPU.SwitchesPerUnit }),
		figure("disk: 8 KiB append + fsync", "fsyncs/s", rs, func(r Round) float64 { return r.Limits.Fsync }),
		figure("SQLite order transaction (FULL)", "commits/s", rs, func(r Round) float64 { return r.Limits.SQLiteOrder }),
		figure("JetStream publish, one by one", "msgs/s", rs, func(r Round) float64 { return r.Limits.PublishOne }),
		figure(fmt.Sprintf("JetStream publish, batch %d", publishBatch), "msgs/s", rs, func(r Round) float64 { return r.Limits.PublishBatch }),
	}
}

// clusterFigures are the cluster topology's: a rate, its ratio to
// pgbench and the latencies for each instance count, then the limits.
func (res Result) clusterFigures() []Figure {
	rs := res.Rounds
	var figs []Figure
	for _, n := range res.Config.Cluster.Instances {
		at := func(r Round) ClusterFlow { return r.clusterFlow(n) }
		name := fmt.Sprintf("converge cluster, %d of each service", n)
		figs = append(figs,
			figure(name, "orders/s", rs, func(r Round) float64 { return at(r).Rate }),
			figure(name+": ratio to pgbench", "", rs, func(r Round) float64 { return at(r).Ratio }),
			figure(name+": order -> final p50", "ms", rs, func(r Round) float64 { return ms(at(r).ToFinalP50) }),
			figure(name+": order -> final p99", "ms", rs, func(r Round) float64 { return ms(at(r).ToFinalP99) }),
			figure(name+": machine CPU per order", "ms", rs, func(r Round) float64 { return ms(at(r).CPU.PerUnit) }),
			figure(name+": cores busy", "%", rs, func(r Round) float64 { return 100 * at(r).CPU.Busy }),
			figure(name+": machine context switches per order", "switches", rs, func(r Round) float64 { return at(r).CPU.SwitchesPerUnit }),
		)
	}
	clients := res.Config.Load.Concurrency
	return append(figs,
		figure(fmt.Sprintf("pgbench order transaction, %d clients", clients), "commits/s", rs, func(r Round) float64 { return r.Limits.Pgbench }),
		figure("pgbench: machine CPU per commit", "ms", rs, func(r Round) float64 { return ms(r.Limits.PgbenchCPU.PerUnit) }),
		figure("pgbench: cores busy", "%", rs, func(r Round) float64 { return 100 * r.Limits.PgbenchCPU.Busy }),
		figure("pgbench: machine context switches per commit", "switches", rs, func(r Round) float64 { return r.Limits.PgbenchCPU.SwitchesPerUnit }),
		figure(fmt.Sprintf("PostgreSQL order transaction, order service code and pool (%d connections), %d goroutines", min(clients, store.PostgresConns), clients), "commits/s", rs, func(r Round) float64 { return r.Limits.PostgresOrder }),
		figure("disk: 8 KiB append + fsync", "fsyncs/s", rs, func(r Round) float64 { return r.Limits.Fsync }),
		figure("JetStream R3 publish, one by one", "msgs/s", rs, func(r Round) float64 { return r.Limits.PublishOne }),
		figure(fmt.Sprintf("JetStream R3 publish, batch %d", publishBatch), "msgs/s", rs, func(r Round) float64 { return r.Limits.PublishBatch }),
	)
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Print writes the summary table: medians over the rounds, with their
// range.
func (res Result) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintf(tw, "load: %s, each flow; %d rounds, medians (min..max)\n", res.Config.Load.Plan(), len(res.Rounds))
	fmt.Fprintln(tw, "what\tmedian\tmin..max\tunit")
	for _, f := range res.Figures() {
		fmt.Fprintf(tw, "%s\t%s\t%s..%s\t%s\n", f.What, num(f.Median), num(f.Min), num(f.Max), f.Unit)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Run keeps only the rounds whose load runs passed and whose converge
	// run then held every invariant.
	line := "every load run: 0 errors, 0 PENDING; after every converge run, every invariant of converge check OK"
	if res.Topology == Cluster {
		line += "\ncluster: 3 brokers (R3 streams, fsync always), PostgreSQL and Redis shared by the instances; pgbench runs the order transaction (order row + outbox row, one commit) on the same server"
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}
	if res.Topology == Cluster {
		return res.printParts(w)
	}
	return nil
}

// printParts writes the cluster flows' machine CPU per order by part:
// medians over the rounds, a column per instance count. It writes
// nothing where no flow has the split (no /proc).
func (res Result) printParts(w io.Writer) error {
	counts := res.Config.Cluster.Instances
	if len(res.Rounds) == 0 || len(counts) == 0 {
		return nil
	}
	of := func(r Round, n int, part string) PartCPU {
		for _, p := range r.clusterFlow(n).Parts {
			if p.Part == part {
				return p
			}
		}
		return PartCPU{}
	}
	if len(res.Rounds[0].clusterFlow(counts[0]).Parts) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "\nmachine CPU per order by part, ms (/proc/PID/stat; medians)")
	head := "part"
	for _, n := range counts {
		head += fmt.Sprintf("\t%d of each", n)
	}
	fmt.Fprintln(tw, head)
	for _, part := range partNames() {
		row := part
		for _, n := range counts {
			seen := part == restOfMachine
			for _, r := range res.Rounds {
				seen = seen || of(r, n, part).Processes > 0
			}
			if !seen {
				row += "\t-" // no process of it on this machine
				continue
			}
			f := figure(part, "ms", res.Rounds, func(r Round) float64 { return ms(of(r, n, part).PerUnit) })
			row += "\t" + num(f.Median)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// WriteFiles writes bench.json (every round's figures and the summary) and
// bench.svg (the summary as bars) into dir, making it if need be.
func (res Result) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(struct {
		Result
		Summary []Figure `json:"summary"`
	}{res, res.Figures()}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, FileJSON), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, FileSVG), []byte(res.svg()), 0o644)
}

// svg draws each rate as a bar with its min..max range; bars of one unit
// share a scale, so the chain and the flow compare at a glance, and so do
// the limits measured in messages.
func (res Result) svg() string {
	var figs []Figure
	for _, f := range res.Figures() {
		if strings.HasSuffix(f.Unit, "/s") {
			figs = append(figs, f)
		}
	}
	// Orders and commits share a scale: an order is one order transaction
	// and more, so the cluster's bars and pgbench's compare at a glance.
	unit := func(u string) string {
		if u == "commits/s" {
			return "orders/s"
		}
		return u
	}
	scale := map[string]float64{}
	for _, f := range figs {
		scale[unit(f.Unit)] = max(scale[unit(f.Unit)], f.Max)
	}
	title := "converge bench, embedded: converge / bare chain " + num(figure("", "", res.Rounds, func(r Round) float64 { return r.Ratio }).Median)
	if res.Topology == Cluster {
		title = "converge bench, cluster: by instances of each service, beside pgbench"
	}
	title = fmt.Sprintf("%s; medians of %d rounds, min..max as a line, bars of one unit on one scale", title, len(res.Rounds))
	// Room for the longest label and the title, at about 7 and 8 pixels a
	// character of 13- and 15-pixel sans-serif.
	const (
		barW, rowH, top = 440.0, 34.0, 40.0
	)
	label := 330.0
	for _, f := range figs {
		label = max(label, 7*float64(len(f.What))+20)
	}
	width := max(label+barW+180, 8*float64(len(title))+20)
	height := top + rowH*float64(len(figs)) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="13">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15">%s</text>`+"\n", html.EscapeString(title))
	for i, f := range figs {
		y := top + rowH*float64(i)
		x := func(v float64) float64 {
			if scale[unit(f.Unit)] == 0 {
				return label
			}
			return label + barW*v/scale[unit(f.Unit)]
		}
		fill := "#8aa9c9"
		if f.Unit == "orders/s" {
			fill = "#3b6ea5"
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", label-10, y+17, html.EscapeString(f.What))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="22" fill="%s"/>`+"\n", label, y+3, x(f.Median)-label, fill)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", x(f.Min), x(f.Max), y+14, y+14)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s %s</text>`+"\n", x(f.Max)+8, y+17, num(f.Median), html.EscapeString(f.Unit))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
