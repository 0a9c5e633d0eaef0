package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/telemetry"
)

// tracing reads the OTEL_* variables (see telemetry.FromEnv); stop flushes
// the spans still buffered, within a few seconds.
func tracing(ctx context.Context, getenv func(string) string, service string) (_ telemetry.Tracing, stop func() error, _ error) {
	tr, shutdown, err := telemetry.FromEnv(ctx, getenv, service)
	if err != nil {
		return telemetry.Tracing{}, nil, usageError{err.Error()}
	}
	return tr, func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			return fmt.Errorf("flush traces: %w", err)
		}
		return nil
	}, nil
}

// shutdownGrace bounds a role's graceful shutdown after Ctrl-C or SIGTERM.
const shutdownGrace = 30 * time.Second

// roleCommand is one role's subcommand: its flags, how to check them and
// how to start it.
type roleCommand struct {
	name     string
	register func(fs *flag.FlagSet)
	validate func() error
	start    func(ctx context.Context, log *slog.Logger, tr telemetry.Tracing) (role.Running, string, error) // the role and what to print
}

func runRole(ctx context.Context, rc roleCommand, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet(rc.name)
	rc.register(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	if err := rc.validate(); err != nil {
		return usageError{rc.name + ": " + err.Error()}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	tr, stopTracing, err := tracing(ctx, getenv, "converge-"+rc.name)
	if err != nil {
		return err
	}
	r, what, err := rc.start(ctx, log, tr)
	if err != nil {
		return errors.Join(fmt.Errorf("%s: %w", rc.name, err), stopTracing())
	}
	fmt.Fprintf(stdout, "converge %s: %s\n", rc.name, what)
	if err := errors.Join(role.Wait(ctx, r, shutdownGrace), stopTracing()); err != nil {
		return fmt.Errorf("%s: %w", rc.name, err)
	}
	fmt.Fprintf(stdout, "converge %s stopped\n", rc.name)
	return nil
}

func orderCommand() roleCommand {
	var cfg role.OrderConfig
	return roleCommand{name: "order", register: cfg.Register, validate: func() error { return cfg.Validate() },
		start: func(ctx context.Context, log *slog.Logger, tr telemetry.Tracing) (role.Running, string, error) {
			cfg.Tracing = tr
			s, err := role.StartOrder(ctx, cfg, log)
			if err != nil {
				return nil, "", err
			}
			return s, "serving on " + s.URL(), nil
		}}
}

func inventoryCommand() roleCommand {
	var cfg role.InventoryConfig
	return roleCommand{name: "inventory", register: cfg.Register, validate: func() error { return cfg.Validate() },
		start: func(ctx context.Context, log *slog.Logger, tr telemetry.Tracing) (role.Running, string, error) {
			cfg.Tracing = tr
			s, err := role.StartInventory(ctx, cfg, log)
			if err != nil {
				return nil, "", err
			}
			return s, "serving on " + s.URL(), nil
		}}
}

func gatewayCommand() roleCommand {
	var cfg role.GatewayConfig
	return roleCommand{name: "gateway", register: cfg.Register, validate: func() error { return cfg.Validate() },
		start: func(ctx context.Context, log *slog.Logger, tr telemetry.Tracing) (role.Running, string, error) {
			cfg.Tracing = tr
			e, err := role.StartGateway(ctx, cfg, log.With("role", "gateway"))
			if err != nil {
				return nil, "", err
			}
			return e, "serving on " + e.URL(), nil
		}}
}

func lbCommand() roleCommand {
	var cfg role.LBConfig
	return roleCommand{name: "lb", register: cfg.Register, validate: func() error { return cfg.Validate() },
		start: func(ctx context.Context, log *slog.Logger, tr telemetry.Tracing) (role.Running, string, error) {
			cfg.Tracing = tr
			e, err := role.StartLB(ctx, cfg, log.With("role", "lb"))
			if err != nil {
				return nil, "", err
			}
			return e, "serving on " + e.URL(), nil
		}}
}

func brokerCommand() roleCommand {
	var cfg role.BrokerConfig
	return roleCommand{name: "broker", register: cfg.Register, validate: func() error { return cfg.Validate() },
		// A broker node is NATS itself: nothing of ours to trace.
		start: func(ctx context.Context, log *slog.Logger, _ telemetry.Tracing) (role.Running, string, error) {
			b, err := role.StartBroker(ctx, cfg, log)
			if err != nil {
				return nil, "", err
			}
			return b, "NATS JetStream on " + b.ClientURL() + ", metrics on " + b.MetricsURL() + "/metrics", nil
		}}
}

// runSetup creates the streams and consumers, once, and exits.
func runSetup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var n role.NATS
	fs := newFlagSet("setup")
	n.Register(fs)
	replicas := fs.Int("replicas", 1, "copies of each stream: 1 for one broker node, 3 in a cluster")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	if err := n.Validate(); err != nil {
		return usageError{"setup: " + err.Error()}
	}
	if *replicas != 1 && *replicas != 3 && *replicas != 5 {
		return usageError{fmt.Sprintf("setup: replicas must be 1, 3 or 5, got %d", *replicas)}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	// A cluster that has just started may not have elected its JetStream
	// leaders yet: try again for a minute.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// Each attempt is short, as a request sent before the cluster has a
	// meta leader is never answered; the first waits a second (an
	// election takes about that), later ones longer, in case the cluster
	// is merely slow.
	for attempt := time.Second; ; attempt = min(2*attempt, 5*time.Second) {
		actx, acancel := context.WithTimeout(ctx, attempt)
		err := role.Setup(actx, n, *replicas, log)
		acancel()
		if err == nil {
			break
		}
		log.Warn("setup failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("setup: gave up after a minute: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	fmt.Fprintf(stdout, "converge setup: streams and consumers ready (%d replicas)\n", *replicas)
	return nil
}
