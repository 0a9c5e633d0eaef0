// Package system assembles converge's roles — load balancer, API gateways,
// order service, inventory service and an embedded NATS JetStream broker —
// into one running system in one process, and takes it down again in the
// reverse order. `converge dev` is a thin command over it; the end-to-end
// and fault tests drive it the same way. Each part is started by the same
// function of package role that its own subcommand uses.
package system

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/telemetry"
)

// Embedded is the --nats value that runs the broker inside the process.
const Embedded = "embedded"

// Config is everything `converge dev` can be told.
type Config struct {
	Addr        string        // load balancer listen address
	DataDir     string        // SQLite files, the broker's store and the API key live here
	APIKey      string        // empty: read DataDir/api-key, or generate and keep one
	AdminKey    string        // of /api/v1/admin/; empty: read DataDir/admin-key, or generate and keep one
	Seed        bool          // seed a demo catalogue into an empty inventory
	Gateways    int           // API gateway instances behind the load balancer
	LBPolicy    string        // "least-loaded" or "round-robin"
	BrokerPort  int           // embedded NATS port; 0 picks a free one
	BrokerSync  bool          // fsync every broker write (the durable default)
	CacheTTL    time.Duration // upper bound on a cached read's staleness
	OrderDB     string        // empty: sqlite under DataDir
	InventoryDB string        // empty: sqlite under DataDir
	Cache       string        // memory or redis://
	CachePrefix string        // prefix of this system's keys in a shared Redis
	NATS        role.NATS     // URLs "embedded": the embedded broker
	AccessLog   bool          // every role logs a line per HTTP request at info
	Tracing     telemetry.Tracing

	// The consumers' retry schedule; zero values take the broker's
	// defaults. Tests shorten it (export_test.go); dev has no flag for it.
	maxDeliver   int
	retryBackoff []time.Duration
}

// DefaultConfig is what `converge dev` runs with when given no flags.
func DefaultConfig() Config {
	return Config{
		Addr:        "127.0.0.1:8080",
		DataDir:     "./converge-data",
		Seed:        true,
		Gateways:    2,
		LBPolicy:    "least-loaded",
		BrokerPort:  4223,
		BrokerSync:  true,
		CacheTTL:    5 * time.Second,
		Cache:       "memory",
		CachePrefix: "converge:",
		NATS:        role.NATS{URLs: Embedded},
		AccessLog:   true,
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
	case cfg.AdminKey != "" && cfg.AdminKey == cfg.APIKey:
		return errors.New("the admin key must differ from the API key")
	}
	for _, sc := range []role.ServiceConfig{cfg.service(cfg.OrderDB, "order"), cfg.service(cfg.InventoryDB, "inventory")} {
		if cfg.embedded() {
			sc.NATS = role.NATS{URLs: "nats://127.0.0.1:4222"} // any valid URL: the real one is known once the broker runs
		}
		if err := sc.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func (cfg Config) embedded() bool { return cfg.NATS.URLs == Embedded || cfg.NATS.URLs == "" }

// dbURL is the database URL of a service: the one given, or its SQLite file
// under the data directory.
func (cfg Config) dbURL(given, name string) string {
	if given != "" {
		return given
	}
	return "sqlite:" + filepath.Join(cfg.DataDir, name+".db")
}

func (cfg Config) service(db, name string) role.ServiceConfig {
	return role.ServiceConfig{
		Addr:         "127.0.0.1:0",
		DB:           cfg.dbURL(db, name),
		Cache:        cfg.Cache,
		CachePrefix:  cfg.CachePrefix,
		CacheTTL:     cfg.CacheTTL,
		NATS:         cfg.NATS,
		Instance:     name + "-1",
		RelayLease:   5 * time.Second,
		AccessLog:    cfg.AccessLog,
		Tracing:      cfg.Tracing,
		MaxDeliver:   cfg.maxDeliver,
		RetryBackoff: cfg.retryBackoff,
	}
}

// System is a running converge.
type System struct {
	cfg Config
	log *slog.Logger

	LBURL        string
	GatewayURLs  []string
	OrderURL     string
	InventoryURL string
	BrokerURL    string
	// BrokerMetricsURL serves the embedded broker's /metrics, /healthz and
	// /readyz ("" with a broker of one's own); every other role serves them
	// on its own URL.
	BrokerMetricsURL string
	APIKey           string
	AdminKey         string
	// OrderDB and InventoryDB are the databases' URLs, for the checker.
	OrderDB, InventoryDB string

	lock *role.DataLock

	// brokerMu makes StartBroker and StopBroker take turns. brokerSrv is
	// read without it, nil from the moment a shutdown begins: nats.go asks
	// the in-process provider for a connection while it holds its own
	// lock, so that must never wait through a broker's start or shutdown.
	brokerMu   sync.Mutex
	brokerSrv  atomic.Pointer[broker.Server]
	brokerPort int // the port it got first, kept across restarts
	brokerHTTP *role.BrokerEndpoint

	// ctl serialises the live page's stops and starts, and Shutdown; mu
	// guards what they change and what the page reads while the system
	// starts: the gateways, the services and the URLs set after the
	// gateways serve.
	ctl       sync.Mutex
	mu        sync.Mutex
	stopped   bool
	order     *role.Service // nil while stopped from the page
	inventory *role.Service
	gateways  []*role.Edge // an entry is nil while stopped from the page
	lb        *role.Edge
	ordCfg    role.OrderConfig
	invCfg    role.InventoryConfig
	gwCfg     role.GatewayConfig

	failed   chan error // a role that stopped on its own
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Start brings up the broker, the two services, the gateways and the load
// balancer, in that order. On error, what was started is stopped again.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *System, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &System{cfg: cfg, log: log, failed: make(chan error, 8), stop: make(chan struct{})}
	defer func() {
		if err != nil {
			shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer done()
			_ = s.Shutdown(shutdownCtx) // the start error is the one to report
		}
	}()
	// The load balancer's address is the one most likely taken: bind it
	// before anything is written, and hold it until the load balancer
	// serves on it, so that no other part takes the port (with :0, the
	// broker or a service would be handed the same one).
	lbListener, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("load balancer: listen on %s: %w", cfg.Addr, err)
	}
	defer func() {
		if s.lb == nil { // not handed over: the start failed, and its error is the one to report
			_ = lbListener.Close()
		}
	}()
	lbAddr := lbListener.Addr().String()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if s.lock, err = role.LockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if s.APIKey, err = APIKey(cfg); err != nil {
		return nil, err
	}
	if s.AdminKey, err = AdminKey(cfg); err != nil {
		return nil, err
	}

	nats := cfg.NATS
	if cfg.embedded() {
		if err := s.StartBroker(); err != nil {
			return nil, err
		}
		if s.brokerHTTP, err = role.Labeled(ctx, "broker", func(context.Context) (*role.BrokerEndpoint, error) {
			return role.StartBrokerEndpoint("127.0.0.1:0", s.broker, s.failed, log.With("role", "broker"))
		}); err != nil {
			return nil, err
		}
		s.BrokerMetricsURL = s.brokerHTTP.URL()
		// The services reach their broker through memory, not the
		// loopback TCP stack; the URL stays for tools and the page.
		nats = role.NATS{URLs: s.BrokerURL, InProcess: embeddedBroker{s}}
	} else {
		s.BrokerURL = nats.URLs
	}
	if err := role.Setup(ctx, nats, 1, log.With("role", "setup")); err != nil {
		return nil, err
	}

	s.invCfg = role.InventoryConfig{ServiceConfig: cfg.service(cfg.InventoryDB, "inventory"), Seed: cfg.Seed}
	s.invCfg.NATS = nats
	if s.inventory, err = s.startInventory(ctx); err != nil {
		return nil, err
	}
	s.watch(s.inventory)
	s.InventoryURL, s.InventoryDB = s.inventory.URL(), s.invCfg.DB

	s.ordCfg = role.OrderConfig{ServiceConfig: cfg.service(cfg.OrderDB, "order")}
	s.ordCfg.NATS = nats
	if s.order, err = s.startOrder(ctx); err != nil {
		return nil, err
	}
	s.watch(s.order)
	s.OrderURL, s.OrderDB = s.order.URL(), s.ordCfg.DB
	// A restart from the live page comes back on the same address.
	s.invCfg.Addr, s.ordCfg.Addr = hostPort(s.InventoryURL), hostPort(s.OrderURL)

	s.gwCfg = role.GatewayConfig{
		Addr:          "127.0.0.1:0",
		APIKey:        s.APIKey,
		AdminKey:      s.AdminKey,
		OrderURLs:     s.OrderURL,
		InventoryURLs: s.InventoryURL,
		AccessLog:     cfg.AccessLog,
		Tracing:       cfg.Tracing,
		UIComponents:  s.parts,
		UIControl:     s,
	}
	for i := range cfg.Gateways {
		gw, err := s.startGateway(ctx, s.gwCfg, i)
		if err != nil {
			return nil, fmt.Errorf("gateway %d: %w", i+1, err)
		}
		s.watch(gw)
		s.mu.Lock()
		s.gateways = append(s.gateways, gw)
		s.GatewayURLs = append(s.GatewayURLs, gw.URL())
		s.mu.Unlock()
	}
	lb, err := role.Labeled(ctx, "lb", func(ctx context.Context) (*role.Edge, error) {
		return role.StartLB(ctx, role.LBConfig{Addr: lbAddr, Listener: lbListener, Gateways: strings.Join(s.GatewayURLs, ","), Policy: cfg.LBPolicy, AccessLog: cfg.AccessLog, Tracing: cfg.Tracing}, log.With("role", "lb"))
	})
	if err != nil {
		return nil, err
	}
	s.watch(lb)
	s.mu.Lock()
	s.lb, s.LBURL = lb, lb.URL()
	s.mu.Unlock()
	return s, nil
}

// startOrder, startInventory and startGateway start a role, at Start and
// at a restart from the live page, labelled for CPU profiles (see
// role.Labeled).
func (s *System) startOrder(ctx context.Context) (*role.Service, error) {
	return role.Labeled(ctx, "order", func(ctx context.Context) (*role.Service, error) {
		return role.StartOrder(ctx, s.ordCfg, s.log)
	})
}

func (s *System) startInventory(ctx context.Context) (*role.Service, error) {
	return role.Labeled(ctx, "inventory", func(ctx context.Context) (*role.Service, error) {
		return role.StartInventory(ctx, s.invCfg, s.log)
	})
}

// startGateway starts gateway i (from 0) with cfg.
func (s *System) startGateway(ctx context.Context, cfg role.GatewayConfig, i int) (*role.Edge, error) {
	return role.Labeled(ctx, "gateway", func(ctx context.Context) (*role.Edge, error) {
		return role.StartGateway(ctx, cfg, s.log.With("role", "gateway", "instance", i+1))
	})
}

// watch forwards a role's failure to Failed.
func (s *System) watch(r role.Running) {
	s.wg.Go(func() {
		select {
		case err := <-r.Failed():
			select {
			case s.failed <- err:
			default:
			}
		case <-s.stop:
		}
	})
}

// Failed delivers the error of a role that stopped by itself; the caller
// should then shut the system down.
func (s *System) Failed() <-chan error { return s.failed }

// Shutdown stops the roles in the reverse order of start: requests held
// open by ?wait= are answered with the order's current state, the load
// balancer drains, then the gateways, then each service stops taking
// requests, finishes the batch it is consuming, flushes its outbox and
// closes its database; the broker goes last.
func (s *System) Shutdown(ctx context.Context) error {
	s.ctl.Lock() // no stop or start from the page from now on
	s.mu.Lock()
	s.stopped = true
	services := []*role.Service{s.order, s.inventory}
	gateways, lb := slices.Clone(s.gateways), s.lb
	s.mu.Unlock()
	s.ctl.Unlock()
	// Long polls would hold every drain below for up to 30 s: answer them now.
	for _, r := range services {
		if r != nil {
			r.Drain()
		}
	}
	var errs []error
	if lb != nil {
		errs = append(errs, lb.Shutdown(ctx))
	}
	for _, gw := range gateways {
		if gw != nil {
			errs = append(errs, gw.Shutdown(ctx))
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, r := range services {
		if r != nil {
			wg.Go(func() {
				err := r.Shutdown(ctx)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	s.stopOnce.Do(func() { close(s.stop) })
	s.wg.Wait()
	if s.brokerHTTP != nil {
		errs = append(errs, s.brokerHTTP.Shutdown(ctx))
	}
	s.StopBroker()
	if s.lock != nil {
		errs = append(errs, s.lock.Release())
	}
	return errors.Join(errs...)
}

// StartBroker starts the embedded broker, on the port it had before if it
// ran already. Fault tests call it after StopBroker.
func (s *System) StartBroker() error {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if s.brokerSrv.Load() != nil {
		return nil
	}
	port := s.cfg.BrokerPort
	if s.brokerPort != 0 { // a restart: keep the address clients reconnect to
		port = s.brokerPort
	}
	srv, err := role.Labeled(context.Background(), "broker", func(context.Context) (*broker.Server, error) {
		return broker.StartServer(broker.ServerConfig{
			Dir:    filepath.Join(s.cfg.DataDir, "broker"),
			Port:   port,
			NoSync: !s.cfg.BrokerSync,
		}, s.log.With("role", "broker"))
	})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	s.brokerPort, s.BrokerURL = srv.Port(), srv.ClientURL()
	s.brokerSrv.Store(srv)
	return nil
}

// embeddedBroker hands out in-memory connections to whichever embedded
// broker runs now, so that the services' connections come back after
// StopBroker and StartBroker as they would over TCP.
type embeddedBroker struct{ s *System }

func (b embeddedBroker) InProcessConn() (net.Conn, error) {
	srv := b.s.broker()
	if srv == nil {
		return nil, errors.New("the embedded broker is stopped")
	}
	// nats-server starts the connection's read and write loops here, in the
	// service's goroutine: they are the broker's work, and are labelled so.
	return role.Labeled(context.Background(), "broker", func(context.Context) (net.Conn, error) {
		return srv.InProcessConn()
	})
}

// broker is the embedded broker while it runs, else nil.
func (s *System) broker() *broker.Server { return s.brokerSrv.Load() }

// StopBroker shuts the embedded broker down; the services keep accepting
// orders into their outboxes and reconnect when it is back.
func (s *System) StopBroker() {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if srv := s.brokerSrv.Swap(nil); srv != nil {
		srv.Shutdown()
	}
}

// KillGateway closes gateway instance i at once, dropping its connections,
// as a crash would. Fault tests use it.
func (s *System) KillGateway(i int) error {
	s.mu.Lock()
	gw := s.gateways[i]
	s.mu.Unlock()
	if gw == nil {
		return nil // stopped from the page
	}
	return gw.Kill()
}

// InRotation lists the gateways the load balancer sends requests to now;
// fault tests use it to see a dead instance leave rotation.
func (s *System) InRotation() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lb.Healthy()
}

// OpenDatabases opens the two services' databases, for the checker.
func (s *System) OpenDatabases(ctx context.Context) (orders, inventory *store.DB, err error) {
	if orders, err = store.Open(ctx, s.OrderDB); err != nil {
		return nil, nil, err
	}
	if inventory, err = store.Open(ctx, s.InventoryDB); err != nil {
		orders.Close()
		return nil, nil, err
	}
	return orders, inventory, nil
}

// APIKey returns the configured key, or the one kept in the data directory,
// or a new one that is then kept there, so a restart keeps the same key.
func APIKey(cfg Config) (string, error) {
	return keptKey(cfg.APIKey, filepath.Join(cfg.DataDir, "api-key"), "cvg_")
}

// AdminKey is the admin API's key, given, kept or new, like APIKey's.
func AdminKey(cfg Config) (string, error) {
	return keptKey(cfg.AdminKey, filepath.Join(cfg.DataDir, "admin-key"), "cvgadm_")
}

func keptKey(given, path, prefix string) (string, error) {
	if given != "" {
		return given, nil
	}
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	key := prefix + rand.Text()
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep %s: %w", filepath.Base(path), err)
	}
	return key, nil
}
