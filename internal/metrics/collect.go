package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// onScrape is a collector whose figures are read when Prometheus scrapes:
// read gets a context bounded by ScrapeTimeout and returns the metrics.
// With reuse set, an answer is served again for that long instead of asking
// again (for a question that costs more than a scrape should).
type onScrape struct {
	descs []*prometheus.Desc
	reuse time.Duration
	read  func(ctx context.Context) ([]prometheus.Metric, error)

	mu     sync.Mutex // one read at a time; concurrent scrapes share it
	at     time.Time
	cached []prometheus.Metric
}

func (c *onScrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *onScrape) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reuse == 0 || c.cached == nil || time.Since(c.at) >= c.reuse {
		ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
		ms, err := c.read(ctx)
		cancel()
		if err != nil {
			// The handler logs it and serves the other collectors.
			ch <- prometheus.NewInvalidMetric(c.descs[0], err)
			return
		}
		c.cached, c.at = ms, time.Now()
	}
	for _, m := range c.cached {
		ch <- m
	}
}

// gauge is a constant gauge sample of d.
func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// counter is a constant counter sample of d, for totals kept elsewhere.
func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}
