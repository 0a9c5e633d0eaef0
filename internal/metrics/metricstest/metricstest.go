// Package metricstest scrapes a role's /metrics over HTTP, as Prometheus
// does, and reads figures from what it got, for tests.
package metricstest

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Figures are the metric families of one scrape, by name.
type Figures map[string]*dto.MetricFamily

// Scrape gets url (a /metrics URL) and parses it with Prometheus' text
// parser; it fails t if either fails.
func Scrape(t testing.TB, url string) Figures {
	t.Helper()
	f, err := TryScrape(url)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ScrapeAll scrapes each of urls and puts their samples together, as
// Prometheus would sum them over instances: Sum then adds up every
// instance's counters.
func ScrapeAll(t testing.TB, urls ...string) Figures {
	t.Helper()
	all := Figures{}
	for _, u := range urls {
		for name, mf := range Scrape(t, u) {
			if have, ok := all[name]; ok {
				have.Metric = append(have.Metric, mf.GetMetric()...)
			} else {
				all[name] = mf
			}
		}
	}
	return all
}

// TryScrape is Scrape that returns its error, for polling.
func TryScrape(url string) (Figures, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %w", url, err)
	}
	return Figures(mfs), nil
}

// Names lists the names a query can use: every family's, and for a
// histogram its _bucket, _sum and _count series too.
func (f Figures) Names() []string {
	var names []string
	for name, mf := range f {
		names = append(names, name)
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names = append(names, name+"_bucket", name+"_sum", name+"_count")
		}
	}
	slices.Sort(names)
	return names
}

// Has reports whether the scrape had a family named name.
func (f Figures) Has(name string) bool {
	_, ok := f[name]
	return ok
}

// Sum adds up the samples of name whose labels include every name=value
// pair of match. name is a counter or gauge, or a histogram's name with
// _count or _sum.
func (f Figures) Sum(name string, match ...string) float64 {
	family, part := name, ""
	if _, ok := f[name]; !ok {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				family, part = base, suffix
			}
		}
	}
	mf, ok := f[family]
	if !ok {
		return 0
	}
	var total float64
	for _, m := range mf.GetMetric() {
		if !matches(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil && part == "_count":
			total += float64(m.GetHistogram().GetSampleCount())
		case m.Histogram != nil && part == "_sum":
			total += m.GetHistogram().GetSampleSum()
		}
	}
	return total
}

// Series counts the samples of name whose labels include match.
func (f Figures) Series(name string, match ...string) int {
	n := 0
	if mf, ok := f[name]; ok {
		for _, m := range mf.GetMetric() {
			if matches(m, match) {
				n++
			}
		}
	}
	return n
}

func matches(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == match[i] && l.GetValue() == match[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
