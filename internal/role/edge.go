package role

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/gateway"
	"github.com/convergehq/converge/internal/lb"
	"github.com/convergehq/converge/internal/metrics"
	"github.com/convergehq/converge/internal/telemetry"
	"github.com/convergehq/converge/internal/ui"
)

// Timeouts a gateway applies per upstream. Orders allow for ?wait=30s.
const (
	orderTimeout     = 35 * time.Second
	inventoryTimeout = 10 * time.Second
)

// GatewayConfig configures `converge gateway`.
type GatewayConfig struct {
	Addr          string
	APIKey        string // the Bearer key clients send (never logged)
	AdminKey      string // the Bearer key of /api/v1/admin/ (never logged); empty: the admin API is off
	OrderURLs     string // comma-separated base URLs of the order service's instances
	InventoryURLs string // comma-separated base URLs of the inventory service's instances
	AccessLog     bool   // log a line per HTTP request at info
	Tracing       telemetry.Tracing

	// The live page at /ui/ shows what the gateway knows: itself, the
	// service instances it forwards to, and the broker nodes whose
	// metrics endpoints UIBrokers lists (comma-separated base URLs).
	UIBrokers string
	// UIComponents, if set, lists the parts the page shows instead (dev
	// knows every part), and UIControl, if set, stops and starts them.
	UIComponents func() []ui.Component
	UIControl    ui.Control
}

// Register adds the role's flags to fs, with their defaults.
func (c *GatewayConfig) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8090", "HTTP listen address of the gateway")
	fs.StringVar(&c.APIKey, "api-key", "", "API key clients must send as 'Authorization: Bearer <key>' (required; never logged)")
	fs.StringVar(&c.AdminKey, "admin-key", "", "admin key operators send as 'Authorization: Bearer <key>' for /api/v1/admin/ (dead letters); empty turns the admin API off (never logged)")
	fs.StringVar(&c.OrderURLs, "order-url", "http://127.0.0.1:8081", "comma-separated base URLs of the order service's instances")
	fs.StringVar(&c.InventoryURLs, "inventory-url", "http://127.0.0.1:8082", "comma-separated base URLs of the inventory service's instances")
	fs.StringVar(&c.UIBrokers, "ui-broker-metrics", "", "comma-separated base URLs of the broker nodes' /metrics and /readyz (their --metrics-addr), for the live page at /ui/")
	registerAccessLog(fs, &c.AccessLog)
}

// Validate checks c before anything starts.
func (c GatewayConfig) Validate() error {
	if c.Addr == "" {
		return errors.New("the gateway address is empty")
	}
	if c.APIKey == "" {
		return errors.New("the API key is empty (--api-key or CONVERGE_API_KEY)")
	}
	if c.AdminKey != "" && c.AdminKey == c.APIKey {
		return errors.New("the admin key must differ from the API key (--admin-key, --api-key)")
	}
	if _, err := parseURLs("order-url", c.OrderURLs); err != nil {
		return err
	}
	if _, err := parseURLs("inventory-url", c.InventoryURLs); err != nil {
		return err
	}
	if c.UIBrokers != "" {
		if _, err := parseURLs("ui-broker-metrics", c.UIBrokers); err != nil {
			return err
		}
	}
	return nil
}

// uiComponents lists what a gateway at self knows of the system, for the
// live page.
func (c GatewayConfig) uiComponents(self string) []ui.Component {
	parts := []ui.Component{{Name: "gateway", Role: "gateway", URL: self}}
	for _, l := range []struct{ role, urls string }{{"order", c.OrderURLs}, {"inventory", c.InventoryURLs}, {"broker", c.UIBrokers}} {
		if l.urls == "" {
			continue
		}
		urls, _ := parseURLs("", l.urls) // checked by Validate
		for i, u := range urls {
			parts = append(parts, ui.Component{Name: fmt.Sprintf("%s-%d", l.role, i+1), Role: l.role, URL: strings.TrimSuffix(u.String(), "/")})
		}
	}
	return parts
}

// parseURLs parses a comma-separated list of absolute http(s) URLs.
func parseURLs(flagName, list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--%s: %q is not an absolute http(s) URL", flagName, s)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: no URL given", flagName)
	}
	return out, nil
}

// Edge is a running gateway or load balancer: one HTTP server and the health
// checks of the instances it forwards to.
type Edge struct {
	http   *server
	bal    *lb.Balancer // the load balancer's, nil for a gateway
	failed chan error
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

// StartGateway starts an API gateway and the health checks of the service
// instances behind it.
func StartGateway(ctx context.Context, cfg GatewayConfig, log *slog.Logger) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	log = telemetry.Logger(log)
	orders, _ := parseURLs("order-url", cfg.OrderURLs) // checked by Validate
	inv, _ := parseURLs("inventory-url", cfg.InventoryURLs)
	srv, err := listen(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	parts := cfg.UIComponents
	if parts == nil {
		known := cfg.uiComponents("http://" + srv.Addr())
		parts = func() []ui.Component { return known }
	}
	page, err := ui.New(ui.Config{Components: parts, Control: cfg.UIControl}, log.With("part", "ui"))
	if err != nil {
		return nil, errors.Join(err, srv.shutdown(ctx))
	}
	gw, err := gateway.New(gateway.Config{
		APIKey:    cfg.APIKey,
		AdminKey:  cfg.AdminKey,
		Orders:    gateway.Upstream{Name: "order", URLs: orders, Timeout: orderTimeout},
		Inventory: gateway.Upstream{Name: "inventory", URLs: inv, Timeout: inventoryTimeout},
		UI:        page,
	}, log)
	if err != nil {
		return nil, errors.Join(err, srv.shutdown(ctx))
	}
	// The checks outlive ctx's cancellation until Shutdown, like the
	// server they feed.
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e := &Edge{http: srv, failed: make(chan error, 1), stop: stop}
	e.wg.Go(func() { gw.Run(hctx) })
	reg := metrics.New("gateway")
	metrics.Backends(reg, func() []metrics.Backend { return poolBackends(gw.Status()) })
	srv.serve(telemetry.Handler(telemetry.HTTPConfig{Role: "gateway", Tracing: cfg.Tracing, Log: log, AccessLog: cfg.AccessLog}, instrument(reg, gw, log)), e.failed)
	return e, nil
}

// LBConfig configures `converge lb`.
type LBConfig struct {
	Addr      string
	Gateways  string // comma-separated base URLs of the gateway instances
	Policy    string // least-loaded or round-robin
	AccessLog bool   // log a line per HTTP request at info
	Tracing   telemetry.Tracing
	// Listener, when set, is Addr already bound: the load balancer serves
	// on it and closes it when it stops; if StartLB fails, it stays the
	// caller's to close. Not a flag: converge dev binds its address before
	// it writes anything, and holds it, so that no other part of the
	// process takes the port in between.
	Listener net.Listener
}

// Register adds the role's flags to fs, with their defaults.
func (c *LBConfig) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "HTTP listen address of the load balancer")
	fs.StringVar(&c.Gateways, "gateway-url", "http://127.0.0.1:8090", "comma-separated base URLs of the API gateway instances")
	fs.StringVar(&c.Policy, "lb-policy", "least-loaded", "how the load balancer picks a gateway: least-loaded or round-robin")
	registerAccessLog(fs, &c.AccessLog)
}

// Validate checks c before anything starts.
func (c LBConfig) Validate() error {
	if c.Addr == "" {
		return errors.New("the load balancer address is empty")
	}
	if c.Policy != "least-loaded" && c.Policy != "round-robin" {
		return fmt.Errorf("lb policy must be least-loaded or round-robin, got %q", c.Policy)
	}
	_, err := parseURLs("gateway-url", c.Gateways)
	return err
}

// StartLB starts the load balancer and its health checks.
func StartLB(ctx context.Context, cfg LBConfig, log *slog.Logger) (*Edge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	log = telemetry.Logger(log)
	backends, _ := parseURLs("gateway-url", cfg.Gateways) // checked by Validate
	bal, err := lb.New(lb.Config{Backends: backends, Policy: cfg.Policy}, log)
	if err != nil {
		return nil, err
	}
	srv := &server{ln: cfg.Listener}
	if srv.ln == nil {
		if srv, err = listen(cfg.Addr); err != nil {
			return nil, fmt.Errorf("lb: %w", err)
		}
	}
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e := &Edge{http: srv, bal: bal, failed: make(chan error, 1), stop: stop}
	e.wg.Go(func() { bal.Run(hctx) })
	reg := metrics.New("lb")
	metrics.Backends(reg, func() []metrics.Backend {
		return poolBackends(map[string][]lb.BackendStatus{"gateway": bal.Status()})
	})
	srv.serve(telemetry.Handler(telemetry.HTTPConfig{Role: "lb", Tracing: cfg.Tracing, Log: log, AccessLog: cfg.AccessLog}, instrument(reg, bal, log)), e.failed)
	return e, nil
}

// URL is the server's base URL.
func (e *Edge) URL() string { return "http://" + e.http.Addr() }

// Healthy lists the gateways a load balancer has in rotation now.
func (e *Edge) Healthy() []string {
	if e.bal == nil {
		return nil
	}
	return e.bal.Healthy()
}

// Failed reports a server that stopped by itself.
func (e *Edge) Failed() <-chan error { return e.failed }

// Kill closes the server at once, as a crash would (fault tests).
func (e *Edge) Kill() error { return e.http.kill() }

// Shutdown drains the server and stops the health checks.
func (e *Edge) Shutdown(ctx context.Context) error {
	err := e.http.shutdown(ctx)
	e.stop()
	e.wg.Wait()
	return err
}
