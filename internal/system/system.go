// Package system assembles converge's roles — load balancer, API gateways,
// order service, inventory service and an embedded NATS JetStream broker —
// into one running system on one machine, and takes it down again in the
// reverse order. `converge dev` is a thin command over it; the end-to-end
// and fault tests drive it the same way.
package system

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/gateway"
	"github.com/convergehq/converge/internal/lb"
)

// Config is everything `converge dev` can be told.
type Config struct {
	Addr       string        // load balancer listen address
	DataDir    string        // SQLite files and the broker's store live here
	APIKey     string        // empty: read DataDir/api-key, or generate and keep one
	Seed       bool          // seed a demo catalogue into a new inventory database
	Gateways   int           // API gateway instances behind the load balancer
	LBPolicy   string        // "least-loaded" or "round-robin"
	BrokerPort int           // embedded NATS port; 0 picks a free one
	BrokerSync bool          // fsync every broker write (the durable default)
	CacheTTL   time.Duration // upper bound on a cached read's staleness
}

// DefaultConfig is what `converge dev` runs with when given no flags.
func DefaultConfig() Config {
	return Config{
		Addr:       "127.0.0.1:8080",
		DataDir:    "./converge-data",
		Seed:       true,
		Gateways:   2,
		LBPolicy:   "least-loaded",
		BrokerPort: 4223,
		BrokerSync: true,
		CacheTTL:   5 * time.Second,
	}
}

// Validate checks cfg before anything is started or written.
func (cfg Config) Validate() error {
	switch {
	case cfg.Addr == "":
		return errors.New("the load balancer address is empty")
	case cfg.DataDir == "":
		return errors.New("the data directory is empty")
	case cfg.Gateways < 1 || cfg.Gateways > 64:
		return fmt.Errorf("gateways must be 1 to 64, got %d", cfg.Gateways)
	case cfg.LBPolicy != "least-loaded" && cfg.LBPolicy != "round-robin":
		return fmt.Errorf("lb policy must be least-loaded or round-robin, got %q", cfg.LBPolicy)
	case cfg.BrokerPort < 0 || cfg.BrokerPort > 65535:
		return fmt.Errorf("broker port must be 0 to 65535, got %d", cfg.BrokerPort)
	case cfg.CacheTTL <= 0:
		return fmt.Errorf("cache TTL must be positive, got %s", cfg.CacheTTL)
	}
	return nil
}

// Timeouts the gateways apply per upstream. Orders allow for ?wait=30s.
const (
	orderTimeout     = 35 * time.Second
	inventoryTimeout = 10 * time.Second
)

// System is a running converge.
type System struct {
	cfg Config
	log *slog.Logger

	LBURL        string
	GatewayURLs  []string
	OrderURL     string
	InventoryURL string
	BrokerURL    string
	APIKey       string

	brokerMu   sync.Mutex
	brokerSrv  *broker.Server
	brokerPort int // the port it got first, kept across restarts

	order     *serviceRole
	inventory *serviceRole
	gateways  []*http.Server
	lbServer  *http.Server

	failed chan error // a role that stopped on its own
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start brings up the broker, the two services, the gateways and the load
// balancer, in that order. On error, what was started is stopped again.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *System, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// The services' loops are stopped one by one in Shutdown, each after its
	// own server; only the load balancer's health checks stop with cancel.
	base := context.WithoutCancel(ctx)
	lbCtx, cancel := context.WithCancel(base)
	s := &System{cfg: cfg, log: log, cancel: cancel, failed: make(chan error, 4)}
	defer func() {
		if err != nil {
			shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer done()
			_ = s.Shutdown(shutdownCtx) // the start error is the one to report
		}
	}()

	if s.APIKey, err = apiKey(cfg); err != nil {
		return nil, err
	}
	if err := s.StartBroker(); err != nil {
		return nil, err
	}
	if err := ensureStreams(ctx, s.BrokerURL, log); err != nil {
		return nil, err
	}

	invDB := filepath.Join(cfg.DataDir, "inventory.db")
	_, statErr := os.Stat(invDB)
	firstStart := errors.Is(statErr, os.ErrNotExist)
	inv, invSvc, err := startInventory(ctx, base, roleConfig{db: "sqlite:" + invDB, broker: s.BrokerURL, cacheTTL: cfg.CacheTTL}, log, s.failed)
	if err != nil {
		return nil, err
	}
	s.inventory, s.InventoryURL = inv, inv.url
	if cfg.Seed && firstStart {
		if err := seed(ctx, invSvc); err != nil {
			return nil, err
		}
	}
	ord, err := startOrder(ctx, base, roleConfig{db: "sqlite:" + filepath.Join(cfg.DataDir, "order.db"), broker: s.BrokerURL, cacheTTL: cfg.CacheTTL}, log, s.failed)
	if err != nil {
		return nil, err
	}
	s.order, s.OrderURL = ord, ord.url

	orderURL := &url.URL{Scheme: "http", Host: ord.addr}
	invURL := &url.URL{Scheme: "http", Host: inv.addr}
	var backends []*url.URL
	for i := range cfg.Gateways {
		gw, err := gateway.New(gateway.Config{
			APIKey:    s.APIKey,
			Orders:    gateway.Upstream{Name: "order", URL: orderURL, Timeout: orderTimeout},
			Inventory: gateway.Upstream{Name: "inventory", URL: invURL, Timeout: inventoryTimeout},
		}, log.With("role", "gateway", "instance", i+1))
		if err != nil {
			return nil, err
		}
		srv, addr, err := serve("127.0.0.1:0", gw, s.failed)
		if err != nil {
			return nil, fmt.Errorf("gateway %d: %w", i+1, err)
		}
		s.gateways = append(s.gateways, srv)
		s.GatewayURLs = append(s.GatewayURLs, "http://"+addr)
		backends = append(backends, &url.URL{Scheme: "http", Host: addr})
	}

	bal, err := lb.New(lb.Config{Backends: backends, Policy: cfg.LBPolicy}, log.With("role", "lb"))
	if err != nil {
		return nil, err
	}
	s.wg.Go(func() { bal.Run(lbCtx) })
	srv, addr, err := serve(cfg.Addr, bal, s.failed)
	if err != nil {
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	s.lbServer, s.LBURL = srv, "http://"+addr
	return s, nil
}

// Failed delivers the error of a role that stopped by itself; the caller
// should then shut the system down.
func (s *System) Failed() <-chan error { return s.failed }

// Shutdown stops the roles in the reverse order of start: requests held
// open by ?wait= are answered with the order's current state, the load
// balancer drains, then the gateways, then each service stops taking requests,
// finishes the batch it is consuming, flushes its outbox and closes its
// database; the broker goes last.
func (s *System) Shutdown(ctx context.Context) error {
	// Long polls would hold every drain below for up to 30 s: answer them now.
	for _, r := range []*serviceRole{s.order, s.inventory} {
		if r != nil && r.drain != nil {
			r.drain()
		}
	}
	var errs []error
	if s.lbServer != nil {
		errs = append(errs, s.lbServer.Shutdown(ctx))
	}
	s.cancel()
	for _, gw := range s.gateways {
		errs = append(errs, gw.Shutdown(ctx))
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, r := range []*serviceRole{s.order, s.inventory} {
		if r != nil {
			wg.Go(func() {
				err := r.shutdown(ctx)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	s.wg.Wait()
	s.StopBroker()
	return errors.Join(errs...)
}

// StartBroker starts the embedded broker, on the port it had before if it
// ran already. Fault tests call it after StopBroker.
func (s *System) StartBroker() error {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if s.brokerSrv != nil {
		return nil
	}
	port := s.cfg.BrokerPort
	if s.brokerPort != 0 { // a restart: keep the address clients reconnect to
		port = s.brokerPort
	}
	srv, err := broker.StartServer(broker.ServerConfig{
		Dir:    filepath.Join(s.cfg.DataDir, "broker"),
		Port:   port,
		NoSync: !s.cfg.BrokerSync,
	}, s.log.With("role", "broker"))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	s.brokerSrv, s.brokerPort, s.BrokerURL = srv, srv.Port(), srv.ClientURL()
	return nil
}

// StopBroker shuts the embedded broker down; the services keep accepting
// orders into their outboxes and reconnect when it is back.
func (s *System) StopBroker() {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if s.brokerSrv != nil {
		s.brokerSrv.Shutdown()
		s.brokerSrv = nil
	}
}

// KillGateway closes gateway instance i at once, dropping its connections,
// as a crash would. Fault tests use it.
func (s *System) KillGateway(i int) error { return s.gateways[i].Close() }

func ensureStreams(ctx context.Context, url string, log *slog.Logger) error {
	conn, err := broker.Connect(ctx, url, "converge-setup", log)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, sc := range []broker.StreamConfig{
		{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}},
		{Name: events.InventoryStream, Subjects: []string{events.InventorySubjects}},
		{Name: events.DeadLetterStream, Subjects: []string{events.DeadLetterSubject}},
	} {
		if err := conn.EnsureStream(ctx, sc); err != nil {
			return err
		}
	}
	return nil
}

// apiKey returns the configured key, or the one kept in the data directory,
// or a new one that is then kept there, so a restart keeps the same key.
func apiKey(cfg Config) (string, error) {
	if cfg.APIKey != "" {
		return cfg.APIKey, nil
	}
	path := filepath.Join(cfg.DataDir, "api-key")
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read API key: %w", err)
	}
	key := "cvg_" + rand.Text()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep API key: %w", err)
	}
	return key, nil
}

// serve starts an HTTP server on addr and returns it with the address it
// got. A server that stops with an error other than a shutdown reports it
// on failed.
func serve(addr string, h http.Handler, failed chan<- error) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case failed <- fmt.Errorf("serve %s: %w", ln.Addr(), err):
			default:
			}
		}
	}()
	return srv, ln.Addr().String(), nil
}
