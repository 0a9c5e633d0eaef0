package load

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The files WriteFiles writes.
const (
	FileJSON      = "report.json"
	FileLatency   = "latency.svg"
	FileHistogram = "histogram.svg"
	FileHTML      = "report.html"
)

// WriteFiles writes into dir, which it makes if missing: report.json (the
// Report, every order's raw figures included), latency.svg (each order's
// POST answer time and order->final against when it was sent),
// histogram.svg (how many orders took how long) and report.html, which
// shows the printed report and both pictures.
func (rep Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("load: write report: %w", err)
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("load: encode report: %w", err)
	}
	latency, histogram := rep.latencySVG(), rep.histogramSVG()
	var text strings.Builder
	if err := rep.Print(&text); err != nil {
		return err
	}
	var page strings.Builder
	if err := reportPage.Execute(&page, struct {
		Text               string
		Latency, Histogram template.HTML
		Generated          string
	}{text.String(), template.HTML(latency), template.HTML(histogram), time.Now().UTC().Format(time.RFC3339)}); err != nil {
		return fmt.Errorf("load: render report page: %w", err)
	}
	for name, content := range map[string]string{
		FileJSON:      string(raw) + "\n",
		FileLatency:   latency,
		FileHistogram: histogram,
		FileHTML:      page.String(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("load: write report: %w", err)
		}
	}
	return nil
}

// The SVGs are self-written with the figures and fixed labels only, so
// they are safe to embed in the page as they are.
var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>converge load report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #111; background: #fff; max-width: 60rem; }
pre { background: #f4f4f4; padding: 1rem; overflow-x: auto; font-size: 0.85rem; }
figure { margin: 1.5rem 0; }
figcaption { font-size: 0.9rem; color: #333; }
</style>
</head>
<body>
<h1>converge load report</h1>
<pre>{{.Text}}</pre>
<figure>{{.Latency}}<figcaption>Each accepted order: its POST's answer time (measured by the client: the 202, or with Prefer: wait the 201) and its order&rarr;final time (the order service's created_at to updated_at), against when it was sent.</figcaption></figure>
<figure>{{.Histogram}}<figcaption>How many orders took how long, on logarithmic buckets.</figcaption></figure>
<p>Raw figures: <a href="report.json">report.json</a>. Written {{.Generated}}.</p>
</body>
</html>
`))

// Colours of the two series, distinguishable by people with the common
// colour-vision deficiencies.
const (
	colourAccept = "#0072b2"
	colourFinal  = "#e69f00"
)

// svgPlot is the frame of a chart: a plotting area inside margins.
type svgPlot struct {
	b                        strings.Builder
	width, height            float64
	left, right, top, bottom float64
}

func newPlot(title string) *svgPlot {
	p := &svgPlot{width: 860, height: 340, left: 70, right: 20, top: 40, bottom: 50}
	fmt.Fprintf(&p.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="%s" font-family="sans-serif" font-size="12">`+"\n",
		p.width, p.height, p.width, p.height, template.HTMLEscapeString(title))
	fmt.Fprintf(&p.b, `<rect width="100%%" height="100%%" fill="#fff"/><text x="%g" y="22" font-size="15">%s</text>`+"\n",
		p.left, template.HTMLEscapeString(title))
	return p
}

// x and y map fractions 0..1 of the plotting area to coordinates.
func (p *svgPlot) x(f float64) float64 { return p.left + f*(p.width-p.left-p.right) }
func (p *svgPlot) y(f float64) float64 { return p.height - p.bottom - f*(p.height-p.top-p.bottom) }

func (p *svgPlot) axes(xLabel, yLabel string) {
	fmt.Fprintf(&p.b, `<path d="M%g %g V%g H%g" fill="none" stroke="#333"/>`+"\n", p.x(0), p.y(1), p.y(0), p.x(1))
	fmt.Fprintf(&p.b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n", p.x(0.5), p.height-10, xLabel)
	fmt.Fprintf(&p.b, `<text transform="translate(16 %g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", p.y(0.5), yLabel)
}

func (p *svgPlot) xTick(f float64, label string) {
	fmt.Fprintf(&p.b, `<path d="M%g %g v5" stroke="#333"/><text x="%g" y="%g" text-anchor="middle">%s</text>`+"\n",
		p.x(f), p.y(0), p.x(f), p.y(0)+18, label)
}

func (p *svgPlot) yTick(f float64, label string) {
	fmt.Fprintf(&p.b, `<path d="M%g %g H%g" stroke="#ddd"/><text x="%g" y="%g" text-anchor="end">%s</text>`+"\n",
		p.x(0), p.y(f), p.x(1), p.x(0)-6, p.y(f)+4, label)
}

func (p *svgPlot) legend() {
	for i, s := range []struct{ colour, name string }{{colourAccept, "POST answer (client)"}, {colourFinal, "order→final (server)"}} {
		x := p.x(1) - 300 + float64(i)*150
		fmt.Fprintf(&p.b, `<rect x="%g" y="12" width="12" height="12" fill="%s"/><text x="%g" y="22">%s</text>`+"\n", x, s.colour, x+16, s.name)
	}
}

func (p *svgPlot) String() string { return p.b.String() + "</svg>\n" }

// logScale maps durations onto 0..1 by decades that cover them all.
type logScale struct{ lo, hi float64 } // log10 of milliseconds, whole decades

func newLogScale(ds ...[]time.Duration) logScale {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, list := range ds {
		for _, d := range list {
			if d > 0 {
				v := math.Log10(ms(d))
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return logScale{0, 3}
	}
	s := logScale{math.Floor(lo), math.Ceil(hi)}
	if s.hi <= s.lo {
		s.hi = s.lo + 1
	}
	return s
}

func (s logScale) at(d time.Duration) float64 {
	return (math.Log10(ms(max(d, time.Microsecond))) - s.lo) / (s.hi - s.lo)
}

// decades calls fn with each decade's position and label.
func (s logScale) decades(fn func(f float64, label string)) {
	for e := s.lo; e <= s.hi; e++ {
		fn((e-s.lo)/(s.hi-s.lo), decadeLabel(int(e)))
	}
}

// decadeLabel names 10^e milliseconds: 100µs, 1ms, 10ms, 100ms, 1s, 10s.
func decadeLabel(e int) string {
	switch {
	case e < 0:
		return fmt.Sprintf("%gµs", math.Pow(10, float64(e+3)))
	case e < 3:
		return fmt.Sprintf("%gms", math.Pow(10, float64(e)))
	}
	return fmt.Sprintf("%gs", math.Pow(10, float64(e-3)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// series returns the POST answer latencies and order->final times of the
// orders, and when each was sent.
func (rep Report) series() (accept, final, acceptAt, finalAt []time.Duration) {
	for _, o := range rep.Orders {
		if o.Accept > 0 {
			accept, acceptAt = append(accept, o.Accept), append(acceptAt, o.Sent)
		}
		if o.ToFinal > 0 {
			final, finalAt = append(final, o.ToFinal), append(finalAt, o.Sent)
		}
	}
	return accept, final, acceptAt, finalAt
}

// latencySVG draws every order's POST answer time and order->final against
// when it was sent, on a logarithmic time axis.
func (rep Report) latencySVG() string {
	p := newPlot("Latency over the run")
	accept, final, acceptAt, finalAt := rep.series()
	ys := newLogScale(accept, final)
	var last time.Duration
	for _, at := range append(acceptAt, finalAt...) {
		last = max(last, at)
	}
	// Ticks every 1, 2 or 5 times a power of ten seconds, at most 6.
	step := 0.1
	for i := 0; last.Seconds()/step > 6; i++ {
		step *= []float64{2, 2.5, 2}[i%3]
	}
	span := time.Duration(math.Ceil(last.Seconds()/step) * step * float64(time.Second))
	span = max(span, time.Duration(step*float64(time.Second)))
	ys.decades(p.yTick)
	for t := 0.0; t <= span.Seconds()+step/2; t += step {
		p.xTick(t/span.Seconds(), fmt.Sprintf("%gs", math.Round(t*10)/10))
	}
	p.axes("time since the first order", "latency (log scale)")
	for _, s := range []struct {
		colour string
		ds, at []time.Duration
	}{{colourAccept, accept, acceptAt}, {colourFinal, final, finalAt}} {
		fmt.Fprintf(&p.b, `<g fill="%s" fill-opacity="0.5">`+"\n", s.colour)
		for i, d := range s.ds {
			fmt.Fprintf(&p.b, `<circle cx="%.1f" cy="%.1f" r="1.6"/>`+"\n", p.x(float64(s.at[i])/float64(span)), p.y(ys.at(d)))
		}
		p.b.WriteString("</g>\n")
	}
	p.legend()
	return p.String()
}

// bucketsPerDecade is the histogram's resolution.
const bucketsPerDecade = 10

// histogramSVG draws how many orders took how long, on logarithmic
// buckets, the two series as outlines over each other.
func (rep Report) histogramSVG() string {
	p := newPlot("How long orders took")
	accept, final, _, _ := rep.series()
	xs := newLogScale(accept, final)
	n := int(xs.hi-xs.lo) * bucketsPerDecade
	count := func(ds []time.Duration) []int {
		c := make([]int, n)
		for _, d := range ds {
			c[min(max(int(xs.at(d)*float64(n)), 0), n-1)]++
		}
		return c
	}
	ca, cf := count(accept), count(final)
	top := 1
	for i := range n {
		top = max(top, ca[i], cf[i])
	}
	xs.decades(p.xTick)
	for i := range 5 {
		f := float64(i) / 4
		p.yTick(f, fmt.Sprint(int(math.Round(f*float64(top)))))
	}
	p.axes("time taken (log scale)", "orders")
	for _, s := range []struct {
		colour string
		c      []int
	}{{colourAccept, ca}, {colourFinal, cf}} {
		var d strings.Builder
		fmt.Fprintf(&d, "M%.1f %.1f", p.x(0), p.y(0))
		for i, v := range s.c {
			y := p.y(float64(v) / float64(top))
			fmt.Fprintf(&d, " V%.1f H%.1f", y, p.x(float64(i+1)/float64(n)))
		}
		fmt.Fprintf(&d, " V%.1f", p.y(0))
		fmt.Fprintf(&p.b, `<path d="%s" fill="%s" fill-opacity="0.35" stroke="%s"/>`+"\n", d.String(), s.colour, s.colour)
	}
	p.legend()
	return p.String()
}
