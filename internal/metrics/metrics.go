// Package metrics is converge's Prometheus instrumentation: one registry per
// role (never the client's global one), the /metrics endpoint, the HTTP
// middleware, and the observers and collectors that turn the mechanisms'
// hooks (store transactions, the outbox relay, caches, broker consumers and
// nodes, the pools of the load balancer and the gateway) into metrics. It
// knows no domain: package role builds the services' own figures (orders by
// status, order -> final latency) from its generic pieces.
//
// Figures that need a question to a database or the broker are read when
// Prometheus scrapes, each bounded by ScrapeTimeout; a collector that fails
// is logged and left out of that scrape, and the rest is served.
package metrics

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/convergehq/converge/internal/web"
)

// Path is where every role serves its metrics.
const Path = "/metrics"

// ScrapeTimeout bounds each question a collector asks while Prometheus
// scrapes (a count in the database, a consumer's info from the broker).
const ScrapeTimeout = 2 * time.Second

// Registry is the metrics of one role. Everything registered through it
// carries the label role="<the role's name>", so that one dashboard query
// can tell the roles apart however they are scraped.
type Registry struct {
	prometheus.Registerer
	gatherer *prometheus.Registry
}

// New returns the registry of a role, with the process's and the Go
// runtime's collectors already registered.
func New(role string) *Registry {
	reg := prometheus.NewRegistry()
	r := &Registry{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"role": role}, reg), gatherer: reg}
	r.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return r
}

// Handler serves the registry in Prometheus' text format. A collector that
// fails is logged and left out; the others are still served. Scrapes that
// arrive together share one collection, so a page polling the endpoint
// beside Prometheus does not multiply the questions to the database and the
// broker. A nil log discards the failures.
func (r *Registry) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(r.gatherer, promhttp.HandlerOpts{
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:  promhttp.ContinueOnError,
		CoalesceGather: true,
	})
}

// Serve answers GET (and HEAD) /metrics from r and passes every other
// request to next. It looks at the path only, so that next (a reverse proxy,
// say) sees every other request exactly as it came.
func (r *Registry) Serve(next http.Handler, log *slog.Logger) http.Handler {
	metrics := r.Handler(log)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != Path {
			next.ServeHTTP(w, req)
			return
		}
		web.SetRoute(req, Path)
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			web.WriteProblem(w, http.StatusMethodNotAllowed, "method "+req.Method+" is not allowed on "+Path)
			return
		}
		metrics.ServeHTTP(w, req)
	})
}
