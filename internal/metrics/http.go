package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergehq/converge/internal/web"
)

// unmatched is the route of a request no route took (a 404, a 405).
const unmatched = "unmatched"

// HTTP times the requests a role serves, by route, method and status, and
// counts those being served.
type HTTP struct {
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// NewHTTP registers the HTTP figures in reg.
func NewHTTP(reg prometheus.Registerer) *HTTP {
	m := &HTTP{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "converge_http_request_duration_seconds",
			Help: "Time to serve an HTTP request, body included, by route (the pattern, not the path), method and status. Its _count is the number of requests.",
			// Up to 30 s: a GET ?wait= may be held that long.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method", "status"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "converge_http_requests_in_flight",
			Help: "HTTP requests being served now: the long polls held (GET ?wait=, Prefer: wait) and this scrape included.",
		}),
	}
	reg.MustRegister(m.duration, m.inFlight)
	return m
}

// Wrap times every request next serves, and counts it while it is served.
// The route is the pattern a web.Handler further in matched (see
// web.TrackRoute), "unmatched" when none did.
func (m *HTTP) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		start := time.Now()
		r, route := web.TrackRoute(r)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		rt := route()
		if rt == "" {
			rt = unmatched
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK // nothing written: net/http answers 200
		}
		m.duration.WithLabelValues(rt, method(r.Method), strconv.Itoa(status)).Observe(time.Since(start).Seconds())
	})
}

// method keeps the label's values to a known set: a client can send any
// method name.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// statusWriter keeps the final status of a response. Unwrap lets
// http.ResponseController reach the connection's Flusher (a reverse proxy
// streaming a response uses it).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 { // 1xx are interim answers
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
