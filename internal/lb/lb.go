// Package lb is the load balancer in front of the API gateway instances. It
// owns the choice of instance for each request (least-loaded or
// round-robin), the active and passive health checks that decide which
// instances are in rotation, the retry of requests whose connection was
// refused, and its own /healthz and /readyz endpoints.
package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// Config says which gateway instances to balance and how to watch them.
type Config struct {
	Backends       []*url.URL    // gateway instances, at least one
	Policy         string        // "least-loaded" (default when "") or "round-robin"
	HealthPath     string        // default "/healthz"
	HealthInterval time.Duration // default 500ms
	HealthTimeout  time.Duration // default 400ms
	FailAfter      int           // consecutive failed checks that take a backend out; default 2
}

const noHealthy = "no healthy gateway instance"

// Balancer is an http.Handler that spreads requests over the gateway
// instances. Without Run, nothing brings back an instance that a failed
// connect took out of rotation.
type Balancer struct {
	cfg      Config
	log      *slog.Logger
	backends []*backend
	policy   *policy
	proxy    *httputil.ReverseProxy
	// transport carries the proxied traffic; Run closes its idle
	// connections on the way out.
	transport *http.Transport
	// checker has keep-alives off so every check dials afresh: what decides
	// whether an instance belongs in rotation is whether it accepts new
	// connections, which a reused connection would not show.
	checker *http.Client
}

// backend is one gateway instance and what the balancer knows of it.
type backend struct {
	url    *url.URL
	health string // URL of its health endpoint

	healthy  atomic.Bool  // read on every pick, so kept outside mu
	inflight atomic.Int64 // requests between pick and the end of the response

	mu    sync.Mutex // serialises transitions of healthy
	fails int        // consecutive failed checks
	// downAt is when the backend last failed. A check that started
	// before it may not bring the backend back: its success is older
	// news than the failure.
	downAt time.Time
}

// New checks cfg, fills in its defaults and returns a Balancer with every
// backend in rotation.
func New(cfg Config, log *slog.Logger) (*Balancer, error) {
	if len(cfg.Backends) == 0 {
		return nil, errors.New("lb: no backends")
	}
	switch cfg.Policy {
	case "":
		cfg.Policy = policyLeastLoaded
	case policyLeastLoaded, policyRoundRobin:
	default:
		return nil, fmt.Errorf("lb: unknown policy %q (want %q or %q)", cfg.Policy, policyLeastLoaded, policyRoundRobin)
	}
	if cfg.HealthPath == "" {
		cfg.HealthPath = "/healthz"
	}
	if !strings.HasPrefix(cfg.HealthPath, "/") {
		return nil, fmt.Errorf("lb: health path %q must start with /", cfg.HealthPath)
	}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 500 * time.Millisecond
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = 400 * time.Millisecond
	}
	if cfg.FailAfter == 0 {
		cfg.FailAfter = 2
	}
	if cfg.HealthInterval < 0 || cfg.HealthTimeout < 0 || cfg.FailAfter < 0 {
		return nil, errors.New("lb: health interval, timeout and fail count must not be negative")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	b := &Balancer{
		cfg:    cfg,
		log:    log,
		policy: &policy{leastLoaded: cfg.Policy == policyLeastLoaded},
	}
	for _, u := range cfg.Backends {
		if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("lb: backend %v is not an absolute http(s) URL", u)
		}
		target := *u // the caller keeps its URL; ours must not change under us
		be := &backend{
			url: &target,
			// The health path is absolute on the instance, whatever base
			// path the proxied traffic is given.
			health: target.ResolveReference(&url.URL{Path: cfg.HealthPath}).String(),
		}
		be.healthy.Store(true)
		b.backends = append(b.backends, be)
	}

	dialer := &net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}
	b.transport = &http.Transport{
		// Proxy stays nil: an HTTP_PROXY in the environment must not
		// divert traffic meant for instances next to us.
		DialContext: dialer.DialContext,
		// All traffic goes to a few hosts, so the per-host idle limit
		// (2 by default) would close and redial connections under load.
		MaxIdleConns:          64 * len(b.backends),
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	b.checker = &http.Client{
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
		},
		// A redirect is not a healthy answer; report it as the non-2xx it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	b.proxy = &httputil.ReverseProxy{
		Rewrite:      b.rewrite,
		Transport:    &retrier{b: b, next: b.transport},
		ErrorHandler: b.proxyError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return b, nil
}

// Healthy returns the URLs of the backends now in rotation, in config order.
func (b *Balancer) Healthy() []string {
	var urls []string
	for _, be := range b.backends {
		if be.healthy.Load() {
			urls = append(urls, be.url.String())
		}
	}
	return urls
}

func (b *Balancer) anyHealthy() bool {
	for _, be := range b.backends {
		if be.healthy.Load() {
			return true
		}
	}
	return false
}

// ServeHTTP answers /healthz and /readyz itself and proxies everything else.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			web.WriteProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		if r.URL.Path == "/readyz" && !b.anyHealthy() {
			web.WriteProblem(w, http.StatusServiceUnavailable, noHealthy)
			return
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	default:
		b.forward(w, r)
	}
}

func (b *Balancer) forward(w http.ResponseWriter, r *http.Request) {
	// Checked before reading the body, so that with every instance down
	// the client hears so at once rather than after its upload.
	if !b.anyHealthy() {
		web.WriteProblem(w, http.StatusServiceUnavailable, noHealthy)
		return
	}
	at := &attempt{tried: make([]bool, len(b.backends))}
	r = r.WithContext(context.WithValue(r.Context(), attemptKey{}, at))
	if err := at.keepBody(r); err != nil {
		web.WriteProblem(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	// Picked only now, so a slow upload does not count as load on an
	// instance that has not seen the request yet.
	i := b.policy.acquire(b.backends, nil)
	if i < 0 {
		web.WriteProblem(w, http.StatusServiceUnavailable, noHealthy)
		return
	}
	at.cur, at.tried[i] = i, true
	// Deferred so the count drops even when ReverseProxy aborts the
	// response with a panic.
	defer func() { b.backends[at.cur].inflight.Add(-1) }()
	b.proxy.ServeHTTP(w, r)
}

func (b *Balancer) rewrite(pr *httputil.ProxyRequest) {
	at := pr.In.Context().Value(attemptKey{}).(*attempt)
	// Kept before SetURL joins the target's path into it, so a retry can
	// aim the same request at another instance.
	u := *pr.Out.URL
	at.in, at.url = pr.In, &u
	pr.SetURL(b.backends[at.cur].url)
	pr.SetXForwarded()
}

func (b *Balancer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
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

// Run checks every backend each HealthInterval, concurrently, until ctx is
// done. It checks once at the start too, so an instance already dead leaves
// rotation without waiting a full interval.
func (b *Balancer) Run(ctx context.Context) {
	defer b.transport.CloseIdleConnections()
	tick := time.NewTicker(b.cfg.HealthInterval)
	defer tick.Stop()
	for {
		b.checkAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkAll returns when every check has, so no check outlives Run.
func (b *Balancer) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, be := range b.backends {
		wg.Go(func() { b.check(ctx, be) })
	}
	wg.Wait()
}

func (b *Balancer) check(ctx context.Context, be *backend) {
	start := time.Now()
	err := b.probe(ctx, be)
	if ctx.Err() != nil {
		return // shutting down; the aborted check says nothing of the instance
	}
	if err == nil {
		if be.succeeded(start) {
			b.log.Info("gateway instance back in rotation", "backend", be.url.String())
		}
		return
	}
	if be.failed(b.cfg.FailAfter) {
		b.log.Warn("gateway instance out of rotation", "backend", be.url.String(), "reason", "health check", "err", err)
	}
}

func (b *Balancer) probe(ctx context.Context, be *backend) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, be.health, nil)
	if err != nil {
		return err
	}
	resp, err := b.checker.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close() // keep-alives are off: no connection to save by draining
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("health check answered %s", resp.Status)
	}
	return nil
}

// markDown takes backend i out of rotation at once: an instance that refuses a
// connection would refuse the next requests too, and the active check is
// there to bring it back.
func (b *Balancer) markDown(i int, err error) {
	be := b.backends[i]
	if be.failed(1) {
		b.log.Warn("gateway instance out of rotation", "backend", be.url.String(), "reason", "connect failed", "err", err)
	}
}

// succeeded records a passed check that started at start and reports
// whether it brought the backend back into rotation.
func (be *backend) succeeded(start time.Time) bool {
	be.mu.Lock()
	defer be.mu.Unlock()
	be.fails = 0
	if be.healthy.Load() || start.Before(be.downAt) {
		return false
	}
	be.healthy.Store(true)
	return true
}

// failed records a failure and takes the backend out once failAfter of
// them are consecutive. It reports whether it took the backend out.
func (be *backend) failed(failAfter int) bool {
	be.mu.Lock()
	defer be.mu.Unlock()
	be.fails++
	be.downAt = time.Now()
	if be.fails < failAfter || !be.healthy.Load() {
		return false
	}
	be.healthy.Store(false)
	return true
}
