// Package gateway owns converge's public HTTP edge: it authenticates API
// callers, bounds request bodies, tags every request with an X-Request-ID and
// reverse-proxies /api/v1 traffic to the order and inventory services,
// answering every failure of its own as problem+json. It keeps no state, so
// any number of instances can run behind a load balancer.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// Upstream is one service the gateway forwards to.
type Upstream struct {
	Name    string        // "order", "inventory": used in error details and logs
	URL     *url.URL      // base URL of the service; a path on it prefixes the incoming path
	Timeout time.Duration // whole-request timeout for this upstream, response body included
}

// Config configures a Gateway.
type Config struct {
	APIKey    string   // required, non-empty, else New errors
	Orders    Upstream // serves /api/v1/orders and /api/v1/orders/...
	Inventory Upstream // serves /api/v1/inventory and /api/v1/inventory/...
}

// Gateway is an http.Handler for the whole public API.
type Gateway struct {
	handler http.Handler
	keyHash [sha256.Size]byte
	log     *slog.Logger
}

// New checks cfg and builds a Gateway. A nil log discards log records.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("gateway: API key is empty")
	}
	orders, err := cfg.Orders.checked("Orders")
	if err != nil {
		return nil, err
	}
	inventory, err := cfg.Inventory.checked("Inventory")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		// Comparing digests keeps the comparison constant-time even when
		// the lengths differ, so a caller cannot probe the key's length.
		keyHash: sha256.Sum256([]byte(cfg.APIKey)),
		log:     log,
	}
	g.handler = g.routes(newTransport(), orders, inventory)
	return g, nil
}

// ServeHTTP serves one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.handler.ServeHTTP(w, r)
}

// checked reports a configuration error early, so a gateway never starts
// with an upstream it cannot reach or a request it cannot bound. It returns a
// copy whose URL the caller can no longer change.
func (u Upstream) checked(field string) (Upstream, error) {
	switch {
	case u.Name == "":
		return u, fmt.Errorf("gateway: %s upstream has no name", field)
	case u.URL == nil:
		return u, fmt.Errorf("gateway: %s upstream has no URL", field)
	case u.URL.Scheme != "http" && u.URL.Scheme != "https":
		return u, fmt.Errorf("gateway: %s upstream URL %q must be http or https", field, u.URL)
	case u.URL.Host == "":
		return u, fmt.Errorf("gateway: %s upstream URL %q has no host", field, u.URL)
	case u.Timeout <= 0:
		return u, fmt.Errorf("gateway: %s upstream timeout must be positive, got %s", field, u.Timeout)
	}
	target := *u.URL
	u.URL = &target
	return u, nil
}

// newTransport is shared by both upstreams. The short dial timeout makes a
// service that is down answer 503 at once instead of after the upstream's
// long timeout, and the large idle pool spares a new connection per request
// under load. It ignores HTTP_PROXY: upstreams are internal services.
func newTransport() *http.Transport {
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// requireKey lets a request through only with the gateway's bearer key, and
// it is the last to see the key: the proxy drops it so services never do.
func (g *Gateway) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.authorized(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			web.WriteProblem(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Gateway) authorized(header string) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], g.keyHash[:]) == 1
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

// proxy forwards to up, bounded by up.Timeout.
func (g *Gateway) proxy(transport http.RoundTripper, up Upstream) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up.URL)
			pr.SetXForwarded()
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Set(requestIDHeader, requestID(pr.In.Context()))
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			// The gateway has already set the id on the response; an echo
			// from the service would otherwise be added as a second value.
			resp.Header.Del(requestIDHeader)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			g.proxyError(w, r, up, err)
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeoutCause(r.Context(), up.Timeout, errUpstreamTimeout)
		defer cancel()
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

// proxyError answers a request the upstream did not answer. It only runs
// before any of the upstream's response has been written.
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
	case unavailable(err):
		status = http.StatusServiceUnavailable
		detail = fmt.Sprintf("%s service unavailable", up.Name)
	default:
		status = http.StatusBadGateway
		detail = fmt.Sprintf("%s service sent an invalid response", up.Name)
	}
	g.log.LogAttrs(ctx, level, "upstream request failed", append(proxyAttrs(r, up, err), slog.Int("status", status))...)
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

type requestIDKey struct{}

// withRequestID runs outermost so every response, errors and 404s included,
// carries the id the services log under.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

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
