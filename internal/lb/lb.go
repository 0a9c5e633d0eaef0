// Package lb spreads requests over the instances of a service. A Pool holds
// the instances of one service: it owns the choice of instance for each
// request (least-loaded or round-robin), the active and passive health
// checks that decide which instances are in rotation, and the retry of
// requests whose connection was refused. The API gateway uses Pools for the
// services behind it; Balancer, the load balancer in front of the gateway
// instances, is a Pool with its own /healthz and /readyz endpoints.
package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// Config says which gateway instances to balance and how to watch them.
type Config struct {
	Backends       []*url.URL    // gateway instances, at least one
	Policy         string        // "least-loaded" (default when "") or "round-robin"
	HealthPath     string        // default "/healthz"
	HealthInterval time.Duration // default 500ms
	HealthTimeout  time.Duration // default 2s
	FailAfter      int           // consecutive failed checks that take a backend out; default 2
}

const (
	instanceName = "gateway instance"
	noHealthy    = "no healthy " + instanceName
)

// Balancer is an http.Handler that spreads requests over the gateway
// instances. Without Run, nothing brings back an instance that a failed
// connect took out of rotation.
type Balancer struct {
	pool  *Pool
	log   *slog.Logger
	proxy http.Handler
}

// New checks cfg, fills in its defaults and returns a Balancer with every
// backend in rotation.
func New(cfg Config, log *slog.Logger) (*Balancer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pool, err := NewPool(PoolConfig{
		Name:           instanceName,
		Backends:       cfg.Backends,
		Policy:         cfg.Policy,
		HealthPath:     cfg.HealthPath,
		HealthInterval: cfg.HealthInterval,
		HealthTimeout:  cfg.HealthTimeout,
		FailAfter:      cfg.FailAfter,
	}, log)
	if err != nil {
		return nil, err
	}
	b := &Balancer{pool: pool, log: log}
	b.proxy = pool.Proxy(ProxyHooks{
		Rewrite:      func(pr *httputil.ProxyRequest) { pr.SetXForwarded() },
		ErrorHandler: b.proxyError,
	})
	return b, nil
}

// Healthy returns the URLs of the backends now in rotation, in config order.
func (b *Balancer) Healthy() []string { return b.pool.Healthy() }

// Status lists every gateway instance and whether it is in rotation.
func (b *Balancer) Status() []BackendStatus { return b.pool.Status() }

// ServeHTTP answers /healthz and /readyz itself and proxies everything else.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz":
		web.SetRoute(r, r.URL.Path)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			web.WriteProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		if r.URL.Path == "/readyz" && !b.pool.AnyHealthy() {
			web.WriteProblem(w, http.StatusServiceUnavailable, noHealthy)
			return
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	default:
		web.SetRoute(r, "proxy")
		b.proxy.ServeHTTP(w, r)
	}
}

func (b *Balancer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNoHealthy):
		web.WriteProblem(w, http.StatusServiceUnavailable, noHealthy)
		return
	case errors.Is(err, ErrReadBody):
		web.WriteProblem(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	if r.Context().Err() != nil {
		// The client left; nobody reads the answer and the instance is
		// not at fault.
		b.log.DebugContext(r.Context(), "client went away", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		b.log.WarnContext(r.Context(), "proxying failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	detail := "the gateway instance did not answer"
	if isDialError(err) {
		detail = "no gateway instance accepted the connection"
	}
	web.WriteProblem(w, http.StatusBadGateway, detail)
}

// Run runs the health checks until ctx is done; see Pool.Run.
func (b *Balancer) Run(ctx context.Context) { b.pool.Run(ctx) }
