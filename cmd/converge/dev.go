package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/convergehq/converge/internal/cluster"
	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/system"
)

func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	cfg := system.DefaultConfig()
	fs := newFlagSet("dev")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "load balancer listen address")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (SQLite files, broker store, API key)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key clients must send as 'Authorization: Bearer <key>' (default: generated once and kept in the data directory)")
	fs.StringVar(&cfg.AdminKey, "admin-key", "", "admin key for /api/v1/admin/ (dead letters) and converge dlq (default: generated once and kept in the data directory)")
	fs.BoolVar(&cfg.Seed, "seed", cfg.Seed, "seed a demo catalogue on first start")
	fs.IntVar(&cfg.Gateways, "gateways", cfg.Gateways, "API gateway instances behind the load balancer")
	fs.StringVar(&cfg.LBPolicy, "lb-policy", cfg.LBPolicy, "how the load balancer picks a gateway: least-loaded or round-robin")
	fs.IntVar(&cfg.BrokerPort, "broker-port", cfg.BrokerPort, "embedded NATS port on 127.0.0.1 (0 picks a free one)")
	fs.BoolVar(&cfg.BrokerSync, "broker-sync", cfg.BrokerSync, "fsync every broker write; false trades durability for speed")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", cfg.CacheTTL, "how long a cached read may live")
	fs.StringVar(&cfg.OrderDB, "order-db", "", "the order service's database: sqlite:PATH or postgres://... (default: sqlite under --data)")
	fs.StringVar(&cfg.InventoryDB, "inventory-db", "", "the inventory service's database: sqlite:PATH or postgres://... (default: sqlite under --data)")
	fs.StringVar(&cfg.Cache, "cache", cfg.Cache, "cache: memory (in-process) or redis://host:6379/N")
	fs.StringVar(&cfg.CachePrefix, "cache-prefix", cfg.CachePrefix, "prefix of this system's keys in a shared Redis")
	fs.BoolVar(&cfg.AccessLog, "access-log", cfg.AccessLog, "log a line per HTTP request at info level, in every role (method, route, status, duration, request and trace ids)")
	cfg.NATS.Register(fs)
	cfg.NATS.URLs = system.Embedded
	fs.Lookup("nats").DefValue = system.Embedded
	fs.Lookup("nats").Usage = "broker: embedded, or comma-separated NATS URLs of your own (nats://host:4222,...)"
	topology := fs.String("topology", "embedded", "embedded (one process) or cluster (a process per instance: 3 brokers, 2 of each service, 2 gateways, the load balancer)")
	restart := fs.Bool("restart-crashed", false, "cluster: start a process again when it dies unexpectedly")
	uiAddr := fs.String("ui-addr", "127.0.0.1:8079", "cluster: where dev serves the live page of every process, with its stop and start buttons (empty: not served; embedded serves it on the load balancer's /ui/)")
	reset := fs.Bool("reset", false, "first remove everything in the data directory (orders, stock, broker store, API key), then start afresh; embedded topology with SQLite only")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	switch *topology {
	case "embedded":
	case "cluster":
		if *reset {
			return usageError{"dev: --reset works with the embedded topology only; the cluster keeps its orders in PostgreSQL"}
		}
		// Every process reads the OTEL_* variables itself.
		return runCluster(ctx, cfg, clusterOptions{restart: *restart, uiAddr: *uiAddr}, log, stdout)
	default:
		return usageError{fmt.Sprintf("dev: --topology must be embedded or cluster, got %q", *topology)}
	}
	// Before anything is created: a bad flag leaves no data directory behind.
	if err := cfg.Validate(); err != nil {
		return usageError{"dev: " + err.Error()}
	}
	if *reset {
		if cfg.OrderDB != "" || cfg.InventoryDB != "" || cfg.NATS.URLs != system.Embedded {
			return usageError{"dev: --reset clears only a data directory that holds everything (SQLite and the embedded broker); with --order-db, --inventory-db or --nats, empty those yourself"}
		}
		if err := resetDataDir(cfg.DataDir, stdout); err != nil {
			return fmt.Errorf("dev: --reset: %w", err)
		}
	}

	tr, stopTracing, err := tracing(ctx, getenv, "converge")
	if err != nil {
		return err
	}
	cfg.Tracing = tr
	defer func() { err = errors.Join(err, stopTracing()) }()
	sys, err := system.Start(ctx, cfg, log)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	fmt.Fprintf(stdout, `converge is running

  load balancer   %s
  API gateways    %v
  order service   %s
  inventory       %s
  NATS JetStream  %s   (nats --server %s stream ls)
  metrics         GET /metrics on each URL above but NATS's%s
  data            %s

  API key         %s
  admin key       %s   (dead letters: converge dlq ls)
  live page       %s/ui/#key=%s&admin=%s

Try:
  curl -s -X POST %s/api/v1/orders \
    -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"customer_id":"c-1","items":[{"sku":"A-1","quantity":2}]}'

Ctrl-C stops it; a second run resumes where this one stopped.
`, sys.LBURL, sys.GatewayURLs, sys.OrderURL, sys.InventoryURL, sys.BrokerURL, sys.BrokerURL, brokerMetrics(sys.BrokerMetricsURL), cfg.DataDir,
		sys.APIKey, sys.AdminKey, sys.LBURL, url.QueryEscape(sys.APIKey), url.QueryEscape(sys.AdminKey), sys.LBURL, sys.APIKey)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-sys.Failed():
		log.Error("a component stopped; shutting down", "err", runErr)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := sys.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("dev: shutdown: %w", err)
	}
	if runErr != nil {
		return fmt.Errorf("dev: %w", runErr)
	}
	fmt.Fprintln(stdout, "converge stopped")
	return nil
}

// clusterOptions are dev's flags that only the cluster topology takes.
type clusterOptions struct {
	restart bool   // --restart-crashed
	uiAddr  string // --ui-addr
}

// runCluster runs the production topology on this machine, one process
// per instance, until Ctrl-C.
func runCluster(ctx context.Context, cfg system.Config, opts clusterOptions, log *slog.Logger, stdout io.Writer) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev: the converge binary: %w", err)
	}
	ccfg := cluster.Config{
		Binary: bin, DataDir: cfg.DataDir, Addr: cfg.Addr, UIAddr: opts.uiAddr, APIKey: cfg.APIKey, AdminKey: cfg.AdminKey,
		OrderDB: cfg.OrderDB, InventoryDB: cfg.InventoryDB, Cache: cfg.Cache, CachePrefix: cfg.CachePrefix,
		Seed: cfg.Seed, BrokerSync: cfg.BrokerSync, RestartCrashed: opts.restart, Gateways: cfg.Gateways,
	}
	if !cfg.AccessLog {
		ccfg.Env = append(ccfg.Env, "CONVERGE_ACCESS_LOG=false")
	}
	if ccfg.APIKey == "" {
		ccfg.APIKey = "placeholder" // checked below, once the data directory may be written
	}
	if ccfg.AdminKey == "" {
		ccfg.AdminKey = "admin-placeholder"
	}
	if err := ccfg.Validate(); err != nil {
		return usageError{"dev: " + err.Error()}
	}
	if cfg.APIKey == "" || cfg.AdminKey == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if ccfg.APIKey, err = system.APIKey(cfg); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		if ccfg.AdminKey, err = system.AdminKey(cfg); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
	}
	c, err := cluster.Start(ctx, ccfg, log)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "converge is running: the cluster topology\n\nROLE\tINSTANCE\tPID\tADDRESS\tMETRICS\tLOG")
	for _, p := range c.Processes() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", p.Role, p.Name, p.PID(), p.Addr, p.Metrics, p.Log)
	}
	tw.Flush()
	first, _, _ := strings.Cut(c.NATSURL, ",")
	keys := "#key=" + url.QueryEscape(ccfg.APIKey) + "&admin=" + url.QueryEscape(ccfg.AdminKey)
	page := c.LBURL + "/ui/" + keys + "   (a gateway's: what it knows, no stop and start buttons; --ui-addr serves the whole cluster's)"
	if c.UIURL != "" {
		page = c.UIURL + "/ui/" + keys + "   (every process, with stop and start buttons)"
	}
	fmt.Fprintf(stdout, `
  load balancer   %s
  API key         %s
  admin key       %s   (dead letters: converge dlq ls)
  live page       %s
  streams         nats --server %s --user %s --password %s stream ls
  check           converge check --order-db '%s' --inventory-db '%s'

Ctrl-C stops every process: the live page first, then the load balancer, the brokers last.
`, c.LBURL, ccfg.APIKey, ccfg.AdminKey, page, first, c.NATSUser, c.NATSPassword, store.Redact(cfg.OrderDB), store.Redact(cfg.InventoryDB))
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down the cluster")
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			defer cancel()
			if err := c.Shutdown(sctx); err != nil {
				return fmt.Errorf("dev: shutdown: %w", err)
			}
			fmt.Fprintln(stdout, "converge stopped")
			return nil
		case err := <-c.Failed():
			if opts.restart {
				log.Error("a process died; restarting it", "err", err)
			} else {
				log.Error("a process died; the others go on (--restart-crashed starts it again)", "err", err)
			}
		}
	}
}

// brokerMetrics says where the embedded broker's metrics are; a broker of
// one's own (--nats) serves its own.
func brokerMetrics(url string) string {
	if url == "" {
		return ""
	}
	return "; the broker's: " + url + "/metrics"
}

// resetDataDir removes everything in dir but its lock file, holding the lock
// meanwhile, so that it refuses while another converge runs there. It
// refuses a directory that has no lock file: that is no data directory of
// converge's, and nothing in it is removed. A missing dir is already empty.
func resetDataDir(dir string, stdout io.Writer) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, role.LockFile)); err != nil {
		return fmt.Errorf("%s has no %s, so it is not a data directory converge made; remove it yourself if you mean to", dir, role.LockFile)
	}
	lock, err := role.LockDataDir(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "reset: removing everything in %s (orders, stock, broker store, API key: a new key is made)\n", dir)
	var errs []error
	for _, e := range entries {
		if e.Name() != role.LockFile {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(append(errs, lock.Release())...)
}
