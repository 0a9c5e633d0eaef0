// Package gateway owns converge's public HTTP edge: it authenticates API
// callers, bounds request bodies, tags every request with an X-Request-ID and
// reverse-proxies /api/v1 traffic to the order and inventory services,
// answering every failure of its own as problem+json. Each service may run
// as several instances: the gateway spreads requests over those whose
// /readyz passes (see lb.Pool). It keeps no state, so any number of
// gateway instances can run behind a load balancer.
package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/lb"
	"github.com/convergehq/converge/internal/telemetry"
	"github.com/convergehq/converge/internal/web"
)

// Upstream is one service the gateway forwards to.
type Upstream struct {
	Name string // "order", "inventory": used in error details and logs
	// URLs are the base URLs of the service's instances, one or more; a
	// path on one prefixes the incoming path.
	URLs    []*url.URL
	Timeout time.Duration // whole-request timeout for this upstream, response body included
}

// healthPath is what decides whether a service instance is in rotation: an
// instance whose database is down cannot serve its requests and says so
// there, while /healthz would still pass.
const healthPath = "/readyz"

// Config configures a Gateway.
type Config struct {
	APIKey string // required, non-empty, else New errors
	// AdminKey opens /api/v1/admin/ (the dead-letter tools), which the
	// order service serves; empty turns the admin API off. It must differ
	// from APIKey: the API key is refused there with 403.
	AdminKey  string
	Orders    Upstream // serves /api/v1/orders and /api/v1/orders/..., and /api/v1/admin/...
	Inventory Upstream // serves /api/v1/inventory and /api/v1/inventory/...
	// UI, if set, serves the live page (package ui) at /ui/. The gateway
	// checks the keys for it: the API key for its state (/ui/api/), the
	// admin key for its stop and start buttons (/ui/api/control).
	UI http.Handler
}

// Gateway is an http.Handler for the whole public API. Without Run, nothing
// brings back a service instance that a refused connection took out of
// rotation.
type Gateway struct {
	handler http.Handler
	keys    Keys
	log     *slog.Logger
	pools   []*lb.Pool // one per upstream, for Run
	names   []string   // the upstream of each pool
}

// New checks cfg and builds a Gateway. A nil log discards log records.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	keys, err := NewKeys(cfg.APIKey, cfg.AdminKey)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	orders, err := cfg.Orders.pool("Orders", log)
	if err != nil {
		return nil, err
	}
	inventory, err := cfg.Inventory.pool("Inventory", log)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		keys:  keys,
		log:   log,
		pools: []*lb.Pool{orders, inventory},
		names: []string{cfg.Orders.Name, cfg.Inventory.Name},
	}
	g.handler = g.routes(g.proxy(orders, cfg.Orders), g.proxy(inventory, cfg.Inventory), cfg.UI)
	return g, nil
}

// Run health-checks the instances of every upstream until ctx is done.
func (g *Gateway) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range g.pools {
		wg.Go(func() { p.Run(ctx) })
	}
	wg.Wait()
}

// Status lists the instances of every upstream, by upstream name, and
// whether each is in rotation.
func (g *Gateway) Status() map[string][]lb.BackendStatus {
	out := make(map[string][]lb.BackendStatus, len(g.pools))
	for i, p := range g.pools {
		out[g.names[i]] = p.Status()
	}
	return out
}

// ServeHTTP serves one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.handler.ServeHTTP(w, r)
}

// pool checks u and builds the pool of its instances, reporting a
// configuration error early, so a gateway never starts with an upstream it
// cannot reach or a request it cannot bound. The pool copies the URLs, so
// the caller can no longer change them under it.
func (u Upstream) pool(field string, log *slog.Logger) (*lb.Pool, error) {
	switch {
	case u.Name == "":
		return nil, fmt.Errorf("gateway: %s upstream has no name", field)
	case len(u.URLs) == 0:
		return nil, fmt.Errorf("gateway: %s upstream has no URL", field)
	case u.Timeout <= 0:
		return nil, fmt.Errorf("gateway: %s upstream timeout must be positive, got %s", field, u.Timeout)
	}
	p, err := lb.NewPool(lb.PoolConfig{
		Name:     u.Name + " instance",
		Backends: u.URLs,
		// /readyz pings the database, which waits for a free connection on
		// a busy instance: slow is not unready (the pool's default timeout
		// allows for it).
		HealthPath: healthPath,
	}, log.With("upstream", u.Name))
	if err != nil {
		return nil, fmt.Errorf("gateway: %s upstream: %w", field, err)
	}
	return p, nil
}

// limitBody refuses a declared oversize body before any upstream is
// contacted, and caps a chunked one, whose size is known only once read; the
// proxy's error handler turns that cap into a 413.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > web.MaxBody {
			web.WriteProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", web.MaxBody))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, web.MaxBody)
		next.ServeHTTP(w, r)
	})
}

// errUpstreamTimeout is the cause of a request context the gateway cancelled
// itself, which tells its timeout apart from a caller that hung up.
var errUpstreamTimeout = errors.New("upstream timeout")

// proxy forwards to an instance of up in pool, bounded by up.Timeout.
func (g *Gateway) proxy(pool *lb.Pool, up Upstream) http.Handler {
	rp := pool.Proxy(lb.ProxyHooks{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Set(requestIDHeader, requestID(pr.In.Context()))
		},
		// A proxied answer takes its id from here or from ErrorHandler,
		// not from withRequestID: a 1xx the proxy passes on (100 Continue)
		// clears the headers set before it, and the proxy adds the
		// service's headers to those set, so an echo would be a second id.
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(requestIDHeader, requestID(resp.Request.Context()))
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.proxyError(w, r, up, err)
		},
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeoutCause(r.Context(), up.Timeout, errUpstreamTimeout)
		defer cancel()
		w.Header().Del(requestIDHeader) // see ModifyResponse
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

// proxyError answers a request the upstream did not answer. It only runs
// before any of the upstream's response has been written.
//
// After a refused connection the pool has already tried the request on every
// other instance in rotation, so a 503 here means none of them took it.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, up Upstream, err error) {
	ctx := r.Context()
	var (
		status int
		detail string
		level  = slog.LevelWarn
	)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		status = http.StatusRequestEntityTooLarge
		detail = fmt.Sprintf("body is larger than %d bytes", web.MaxBody)
		level = slog.LevelInfo
	case errors.Is(context.Cause(ctx), errUpstreamTimeout):
		status = http.StatusGatewayTimeout
		detail = fmt.Sprintf("%s service did not answer within %s", up.Name, up.Timeout)
	case ctx.Err() != nil:
		// The caller hung up; nobody is left to read an answer.
		g.log.LogAttrs(ctx, slog.LevelInfo, "caller went away", proxyAttrs(r, up, err)...)
		return
	case errors.Is(err, lb.ErrReadBody):
		// The caller's upload broke. Checked before unavailable, whose
		// network errors would blame the service for it.
		status = http.StatusBadRequest
		detail = "reading the request body failed"
		level = slog.LevelInfo
	case errors.Is(err, lb.ErrNoHealthy) || unavailable(err):
		status = http.StatusServiceUnavailable
		detail = fmt.Sprintf("%s service unavailable", up.Name)
	default:
		status = http.StatusBadGateway
		detail = fmt.Sprintf("%s service sent an invalid response", up.Name)
	}
	g.log.LogAttrs(ctx, level, "upstream request failed", append(proxyAttrs(r, up, err), slog.Int("status", status))...)
	w.Header().Set(requestIDHeader, requestID(ctx)) // see ModifyResponse
	web.WriteProblem(w, status, detail)
}

func proxyAttrs(r *http.Request, up Upstream, err error) []slog.Attr {
	return []slog.Attr{
		slog.String("request_id", requestID(r.Context())),
		slog.String("upstream", up.Name),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Any("err", err),
	}
}

// unavailable reports whether err means the service could not be reached or
// dropped the connection: refused, reset, dial timeout, unknown host, or
// closed before answering.
func unavailable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

const requestIDHeader = "X-Request-ID"

// withRequestID runs outermost so every response, errors and 404s included,
// carries the id the services log under.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(telemetry.WithRequestID(r.Context(), id)))
	})
}

// requestID is the id withRequestID gave the request; the log handler
// of package telemetry adds it to what is logged with ctx.
func requestID(ctx context.Context) string { return telemetry.RequestID(ctx) }

// validRequestID accepts 1 to 128 visible ASCII characters: enough for any
// tracing scheme, and nothing that could split a log line or a header.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := range len(id) {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}
