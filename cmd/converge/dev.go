package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/convergehq/converge/internal/system"
)

func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := system.DefaultConfig()
	fs := newFlagSet("dev")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "load balancer listen address")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory (SQLite files, broker store, API key)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key clients must send as 'Authorization: Bearer <key>' (default: generated once and kept in the data directory)")
	fs.BoolVar(&cfg.Seed, "seed", cfg.Seed, "seed a demo catalogue on first start")
	fs.IntVar(&cfg.Gateways, "gateways", cfg.Gateways, "API gateway instances behind the load balancer")
	fs.StringVar(&cfg.LBPolicy, "lb-policy", cfg.LBPolicy, "how the load balancer picks a gateway: least-loaded or round-robin")
	fs.IntVar(&cfg.BrokerPort, "broker-port", cfg.BrokerPort, "embedded NATS port on 127.0.0.1 (0 picks a free one)")
	fs.BoolVar(&cfg.BrokerSync, "broker-sync", cfg.BrokerSync, "fsync every broker write; false trades durability for speed")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", cfg.CacheTTL, "how long a cached read may live")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	// Before anything is created: a bad flag leaves no data directory behind.
	if err := cfg.Validate(); err != nil {
		return usageError{"dev: " + err.Error()}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}

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
  data            %s

  API key         %s

Try:
  curl -s -X POST %s/api/v1/orders \
    -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \
    -d '{"customer_id":"c-1","items":[{"sku":"A-1","quantity":2}]}'

Ctrl-C stops it; a second run resumes where this one stopped.
`, sys.LBURL, sys.GatewayURLs, sys.OrderURL, sys.InventoryURL, sys.BrokerURL, sys.BrokerURL, cfg.DataDir,
		sys.APIKey, sys.LBURL, sys.APIKey)

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
