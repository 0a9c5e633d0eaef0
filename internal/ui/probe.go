package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Part is one component as the page shows it.
type Part struct {
	Name    string  `json:"name"`
	Role    string  `json:"role"`
	Status  string  `json:"status"`           // "up" (its /readyz passes) or "down"
	Detail  string  `json:"detail,omitempty"` // why it is down
	Control bool    `json:"control"`          // the page may stop and start it
	Figures Figures `json:"figures"`
}

// Figures are what the page shows of a part's /metrics; a figure the part
// does not serve, or could not read (a broker figure while the broker is
// away), is absent. Counters are totals: the page takes their rate
// between two states.
type Figures struct {
	Requests    *float64  `json:"requests,omitempty"`     // HTTP requests served, probes and scrapes left out
	Published   *float64  `json:"published,omitempty"`    // outbox events the relay published
	Received    *float64  `json:"received,omitempty"`     // messages a broker node received
	Outbox      *float64  `json:"outbox,omitempty"`       // outbox events not yet published
	Lag         *float64  `json:"lag,omitempty"`          // messages of the stream its consumer has not finished
	DeadLetters *float64  `json:"dead_letters,omitempty"` // its consumer's messages in the DLQ stream
	Stored      *float64  `json:"stored,omitempty"`       // messages in a broker node's streams
	Backends    []Backend `json:"backends,omitempty"`     // what a load balancer or gateway forwards to
	DB          string    `json:"db,omitempty"`           // the engine of a service's database
	Cache       string    `json:"cache,omitempty"`        // memory or redis
	CacheHits   *float64  `json:"cache_hits,omitempty"`
	CacheMisses *float64  `json:"cache_misses,omitempty"`
}

// Backend is one instance a load balancer or gateway forwards to.
type Backend struct {
	Pool string `json:"pool"`
	URL  string `json:"url"`
	Up   bool   `json:"up"`
}

// probe asks c for its readiness and its metrics, at once.
func (h *Handler) probe(ctx context.Context, c Component) Part {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	p := Part{Name: c.Name, Role: c.Role, Status: "up"}
	var (
		wg      sync.WaitGroup
		ready   error
		figures Figures
	)
	wg.Go(func() { ready = h.ready(ctx, c.URL) })
	wg.Go(func() {
		// A service's figures of the broker wait on the broker; while it
		// is going away they may take long. The page shows them as
		// unknown rather than let them hold back every part's health.
		ctx, cancel := context.WithTimeout(ctx, figuresTimeout)
		defer cancel()
		mfs, err := h.scrape(ctx, c.URL)
		if err == nil {
			figures = read(mfs)
		}
	})
	wg.Wait()
	if ready != nil {
		p.Status, p.Detail = "down", ready.Error()
	}
	p.Figures = figures
	return p
}

// ready is nil when base's /readyz passes, else why not.
func (h *Handler) ready(ctx context.Context, base string) error {
	resp, err := h.get(ctx, base+"/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var problem struct {
		Detail string `json:"detail"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&problem); err == nil && problem.Detail != "" {
		return fmt.Errorf("%s", problem.Detail)
	}
	return fmt.Errorf("readyz: %s", resp.Status)
}

func (h *Handler) scrape(ctx context.Context, base string) (map[string]*dto.MetricFamily, error) {
	resp, err := h.get(ctx, base+"/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(io.LimitReader(resp.Body, 8<<20))
}

func (h *Handler) get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, noAnswer(err)
	}
	return resp, nil
}

// noAnswer says why a part did not answer in a few words: the page shows
// it beside "down".
func noAnswer(err error) error {
	switch s := err.Error(); {
	case strings.Contains(s, "connection refused"):
		return fmt.Errorf("no answer: connection refused")
	case strings.Contains(s, "deadline exceeded"), strings.Contains(s, "Timeout"):
		return fmt.Errorf("no answer within %s", probeTimeout)
	}
	return fmt.Errorf("no answer: %w", err)
}

// probeRoutes are requests the figures leave out of a part's requests:
// health checks, scrapes and the page's own polling, which would otherwise
// be most of an idle system's traffic.
func probeRoute(route string) bool {
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/ui/"} {
		if strings.Contains(route, p) {
			return true
		}
	}
	return false
}

// read picks the page's figures out of one scrape.
func read(mfs map[string]*dto.MetricFamily) Figures {
	var f Figures
	if mf, ok := mfs["converge_http_request_duration_seconds"]; ok {
		var n float64
		for _, m := range mf.GetMetric() {
			if !probeRoute(label(m, "route")) {
				n += float64(m.GetHistogram().GetSampleCount())
			}
		}
		f.Requests = &n
	}
	f.Published = sum(mfs, "converge_relay_published_events_total")
	f.Received = sum(mfs, "converge_broker_received_messages_total")
	f.Outbox = sum(mfs, "converge_outbox_backlog_events")
	if pending, acking := sum(mfs, "converge_consumer_pending_messages"), sum(mfs, "converge_consumer_ack_pending_messages"); pending != nil && acking != nil {
		lag := *pending + *acking
		f.Lag = &lag
	}
	f.DeadLetters = sum(mfs, "converge_deadletter_messages")
	f.Stored = sum(mfs, "converge_broker_stored_messages")
	if mf, ok := mfs["converge_backend_up"]; ok {
		for _, m := range mf.GetMetric() {
			f.Backends = append(f.Backends, Backend{Pool: label(m, "pool"), URL: label(m, "backend"), Up: m.GetGauge().GetValue() == 1})
		}
	}
	if mf, ok := mfs["converge_db_transaction_duration_seconds"]; ok && len(mf.GetMetric()) > 0 {
		f.DB = label(mf.GetMetric()[0], "engine")
	}
	if mf, ok := mfs["converge_cache_lookups_total"]; ok {
		var hits, misses float64
		for _, m := range mf.GetMetric() {
			f.Cache = label(m, "cache")
			switch label(m, "result") {
			case "hit":
				hits += m.GetCounter().GetValue()
			case "miss":
				misses += m.GetCounter().GetValue()
			}
		}
		f.CacheHits, f.CacheMisses = &hits, &misses
	}
	return f
}

// sum adds up the samples of a counter or gauge family, nil when the scrape
// has none.
func sum(mfs map[string]*dto.MetricFamily, name string) *float64 {
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return nil
	}
	var n float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			n += m.GetCounter().GetValue()
		case m.Gauge != nil:
			n += m.GetGauge().GetValue()
		}
	}
	return &n
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
