package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Counts registers a gauge with one label, read on scrape by count and
// reused for reuse: for a count that scans (orders by status), which a
// scrape every few seconds should not repeat each time.
func Counts(reg prometheus.Registerer, name, help, label string, reuse time.Duration, count func(ctx context.Context) (map[string]int64, error)) {
	d := prometheus.NewDesc(name, help, []string{label}, nil)
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{d}, reuse: reuse, read: func(ctx context.Context) ([]prometheus.Metric, error) {
		counts, err := count(ctx)
		if err != nil {
			return nil, err
		}
		ms := make([]prometheus.Metric, 0, len(counts))
		for v, n := range counts {
			ms = append(ms, gauge(d, float64(n), v))
		}
		return ms, nil
	}})
}

// Latency registers a histogram of durations up to minutes, with one
// label, and returns the function that observes one.
func Latency(reg prometheus.Registerer, name, help, label string) func(value string, d time.Duration) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    name,
		Help:    help,
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{label})
	reg.MustRegister(h)
	return func(value string, d time.Duration) { h.WithLabelValues(value).Observe(d.Seconds()) }
}
