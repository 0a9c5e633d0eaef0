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
)

// PoolConfig says which instances a Pool spreads requests over and how to
// watch them.
type PoolConfig struct {
	// Name says what an instance is, in log records and errors:
	// "gateway instance", "order instance". Default "instance".
	Name           string
	Backends       []*url.URL    // the instances, at least one
	Policy         string        // "least-loaded" (default when "") or "round-robin"
	HealthPath     string        // default "/healthz"
	HealthInterval time.Duration // default 500ms
	HealthTimeout  time.Duration // default 2s
	FailAfter      int           // consecutive failed checks that take a backend out; default 2
}

// ErrNoHealthy is wrapped by the error a Pool's proxy hands its error
// handler when no instance is in rotation.
var ErrNoHealthy = errors.New("no instance in rotation")

// ErrReadBody is wrapped by the error a Pool's proxy hands its error handler
// when the request body could not be read; the error it wraps as well says
// why (an *http.MaxBytesError, for one).
var ErrReadBody = errors.New("reading the request body failed")

// Pool is a set of instances of one service: it chooses the instance for
// each request, runs the health checks that decide which instances are in
// rotation, and resends a request whose connection was refused to another
// instance. Without Run, nothing brings back an instance that a failed
// connect took out of rotation.
type Pool struct {
	cfg      PoolConfig
	log      *slog.Logger
	backends []*backend
	policy   *policy
	// noneErr is the error for a request that finds no instance in
	// rotation; built once, it names the instance kind.
	noneErr error
	// transport carries the proxied traffic; Run closes its idle
	// connections on the way out.
	transport *http.Transport
	// checker has keep-alives off so every check dials afresh: what decides
	// whether an instance belongs in rotation is whether it accepts new
	// connections, which a reused connection would not show.
	checker *http.Client
}

// backend is one instance and what the pool knows of it.
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

// NewPool checks cfg, fills in its defaults and returns a Pool with every
// backend in rotation. A nil log discards log records.
func NewPool(cfg PoolConfig, log *slog.Logger) (*Pool, error) {
	if len(cfg.Backends) == 0 {
		return nil, errors.New("lb: no backends")
	}
	if cfg.Name == "" {
		cfg.Name = "instance"
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
		// Slow is not dead: on a busy machine a live instance's answer can
		// take a second, and taking every instance out for it refuses all
		// traffic. A dead instance refuses the connection and a broken one
		// answers an error at once, so this costs no time in taking either
		// out; only a hung one takes longer to leave.
		cfg.HealthTimeout = 2 * time.Second
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

	p := &Pool{
		cfg:     cfg,
		log:     log,
		policy:  &policy{leastLoaded: cfg.Policy == policyLeastLoaded},
		noneErr: fmt.Errorf("no healthy %s: %w", cfg.Name, ErrNoHealthy),
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
		p.backends = append(p.backends, be)
	}

	// The short dial timeout lets a request meet an instance that does not
	// answer, and go on to another, within a second rather than after the
	// caller's own (for orders, long) timeout.
	dialer := &net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}
	p.transport = &http.Transport{
		// Proxy stays nil: an HTTP_PROXY in the environment must not
		// divert traffic meant for instances next to us.
		DialContext: dialer.DialContext,
		// All traffic goes to a few hosts, so the per-host idle limit
		// (2 by default) would close and redial connections under load.
		MaxIdleConns:          64 * len(p.backends),
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	p.checker = &http.Client{
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
		},
		// A redirect is not a healthy answer; report it as the non-2xx it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

// Healthy returns the URLs of the backends now in rotation, in config order.
func (p *Pool) Healthy() []string {
	var urls []string
	for _, be := range p.backends {
		if be.healthy.Load() {
			urls = append(urls, be.url.String())
		}
	}
	return urls
}

// BackendStatus is one backend and whether it is in rotation.
type BackendStatus struct {
	URL string
	Up  bool
}

// Status lists every backend and whether it is in rotation, in config order.
func (p *Pool) Status() []BackendStatus {
	out := make([]BackendStatus, len(p.backends))
	for i, be := range p.backends {
		out[i] = BackendStatus{URL: be.url.String(), Up: be.healthy.Load()}
	}
	return out
}

// AnyHealthy reports whether at least one backend is in rotation.
func (p *Pool) AnyHealthy() bool {
	for _, be := range p.backends {
		if be.healthy.Load() {
			return true
		}
	}
	return false
}

// ProxyHooks are what a user of a Pool adds to the reverse proxy it builds.
// Each may be nil.
type ProxyHooks struct {
	// Rewrite adjusts the outbound request once the pool has aimed it at
	// an instance. It may change headers but not the URL: a retry aims
	// the same request at another instance and would undo it.
	Rewrite func(*httputil.ProxyRequest)
	// ModifyResponse is httputil.ReverseProxy's.
	ModifyResponse func(*http.Response) error
	// ErrorHandler answers a request no instance answered. Besides the
	// ReverseProxy's own errors, err may wrap ErrNoHealthy or ErrReadBody.
	// Nil answers 502 with no body.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
}

// Proxy returns a handler that forwards each request to an instance in
// rotation, chosen by the pool's policy, and resends it to another one when
// the connection is refused.
func (p *Pool) Proxy(h ProxyHooks) http.Handler {
	onError := h.ErrorHandler
	if onError == nil {
		onError = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			p.rewrite(pr)
			if h.Rewrite != nil {
				h.Rewrite(pr)
			}
		},
		Transport:      &retrier{p: p, next: p.transport},
		ModifyResponse: h.ModifyResponse,
		ErrorHandler:   onError,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		BufferPool:     &copyBuffers{},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.forward(w, r, rp, onError)
	})
}

func (p *Pool) forward(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy, onError func(http.ResponseWriter, *http.Request, error)) {
	// Checked before reading the body, so that with every instance down
	// the client hears so at once rather than after its upload.
	if !p.AnyHealthy() {
		onError(w, r, p.noneErr)
		return
	}
	at := &attempt{tried: make([]bool, len(p.backends))}
	r = r.WithContext(context.WithValue(r.Context(), attemptKey{}, at))
	if err := at.keepBody(r); err != nil {
		onError(w, r, fmt.Errorf("%w: %w", ErrReadBody, err))
		return
	}
	// Picked only now, so a slow upload does not count as load on an
	// instance that has not seen the request yet.
	i := p.policy.acquire(p.backends, nil)
	if i < 0 {
		onError(w, r, p.noneErr)
		return
	}
	at.cur, at.tried[i] = i, true
	// Deferred so the count drops even when ReverseProxy aborts the
	// response with a panic.
	defer func() { p.backends[at.cur].inflight.Add(-1) }()
	rp.ServeHTTP(w, r)
}

func (p *Pool) rewrite(pr *httputil.ProxyRequest) {
	at := pr.In.Context().Value(attemptKey{}).(*attempt)
	// Kept before SetURL joins the target's path into it, so a retry can
	// aim the same request at another instance.
	u := *pr.Out.URL
	at.in, at.url = pr.In, &u
	pr.SetURL(p.backends[at.cur].url)
}

// Run checks every backend each HealthInterval, concurrently, until ctx is
// done. It checks once at the start too, so an instance already dead leaves
// rotation without waiting a full interval.
func (p *Pool) Run(ctx context.Context) {
	defer p.transport.CloseIdleConnections()
	tick := time.NewTicker(p.cfg.HealthInterval)
	defer tick.Stop()
	for {
		p.checkAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkAll returns when every check has, so no check outlives Run.
func (p *Pool) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, be := range p.backends {
		wg.Go(func() { p.check(ctx, be) })
	}
	wg.Wait()
}

func (p *Pool) check(ctx context.Context, be *backend) {
	start := time.Now()
	err := p.probe(ctx, be)
	if ctx.Err() != nil {
		return // shutting down; the aborted check says nothing of the instance
	}
	if err == nil {
		if be.succeeded(start) {
			p.log.Info(p.cfg.Name+" back in rotation", "backend", be.url.String())
		}
		return
	}
	if be.failed(p.cfg.FailAfter) {
		p.log.Warn(p.cfg.Name+" out of rotation", "backend", be.url.String(), "reason", "health check", "err", err)
	}
}

func (p *Pool) probe(ctx context.Context, be *backend) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, be.health, nil)
	if err != nil {
		return err
	}
	resp, err := p.checker.Do(req)
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
func (p *Pool) markDown(i int, err error) {
	be := p.backends[i]
	if be.failed(1) {
		p.log.Warn(p.cfg.Name+" out of rotation", "backend", be.url.String(), "reason", "connect failed", "err", err)
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

// copyBuffers lends ReverseProxy the buffers it copies response bodies
// through, which it would otherwise allocate, 32 KiB each, for every
// request.
type copyBuffers struct{ pool sync.Pool }

// copyBufferSize is ReverseProxy's own size for the buffers it allocates.
const copyBufferSize = 32 << 10

func (b *copyBuffers) Get() []byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return *p
	}
	return make([]byte, copyBufferSize)
}

func (b *copyBuffers) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return // not one of ours
	}
	buf = buf[:copyBufferSize]
	b.pool.Put(&buf)
}
