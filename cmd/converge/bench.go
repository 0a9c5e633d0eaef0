package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/convergehq/converge/internal/bench"
	"github.com/convergehq/converge/internal/load"
)

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultConfig()
	fs := newFlagSet("bench")
	fs.StringVar(&cfg.Topology, "topology", cfg.Topology, "the system measured: embedded (one process, SQLite, embedded JetStream, beside the bare chain) or cluster (a process per instance: 3 brokers R3, PostgreSQL, Redis, beside pgbench)")
	fs.StringVar(&cfg.Cluster.Postgres, "postgres", "", "cluster: `URL` of a database on the PostgreSQL server to measure (postgres://...); each flow and limit creates databases of its own beside it and drops them after")
	fs.StringVar(&cfg.Cluster.Cache, "cache", "", "cluster: the Redis the services share, redis://host:6379/N; each flow's keys get a prefix of their own")
	instances := fs.String("instances", "1,2,4", "cluster: the instance counts measured, comma-separated: each flow runs that many order services, inventory services and gateways")
	fs.StringVar(&cfg.Cluster.Pgbench, "pgbench", "pgbench", "cluster: the pgbench `program` that measures the order transaction on the same server")
	fs.StringVar(&cfg.Cluster.Binary, "binary", "", "cluster: the converge `executable` each process runs (default: this one)")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, fmt.Sprintf("rounds, 1 to %d; each runs every flow (embedded: the bare chain and converge, in turn first; cluster: each instance count, in turn reversed) and measures the limits", bench.MaxRounds))
	fs.IntVar(&cfg.Load.Orders, "orders", cfg.Load.Orders, fmt.Sprintf("orders each flow places per round, 1 to %d; with --duration, the most", load.MaxOrders))
	fs.IntVar(&cfg.Load.Concurrency, "concurrency", cfg.Load.Concurrency, "closed model: workers placing orders; in both models, as many follow the orders to their outcomes")
	fs.Float64Var(&cfg.Load.Rate, "rate", 0, "open model: start this many orders a second on a schedule, whatever the answers; 0: the closed model of --concurrency")
	fs.DurationVar(&cfg.Load.Duration, "duration", 0, "stop placing orders after this long in each flow (--orders is then the most; by default rate x duration in the open model, unbounded in the closed one)")
	fs.DurationVar(&cfg.Load.Timeout, "timeout", cfg.Load.Timeout, "stop a flow's load run after this long, which fails the bench; with --duration and no --timeout, a minute more than the duration")
	fs.IntVar(&cfg.Load.SKUs, "skus", cfg.Load.SKUs, "SKUs LOAD-1..LOAD-n the orders draw from")
	fs.BoolVar(&cfg.Load.PreferWait, "prefer-wait", false, "each POST asks, with Prefer: wait=30, to be answered once its order is final: one round trip per order in every flow instead of a POST and a GET ?wait= (the bare chain's stub answers such a POST at once, 201); closed-model workers then wait for outcomes")
	fs.IntVar(&cfg.Gateways, "gateways", cfg.Gateways, "embedded: API gateway instances behind the load balancer, in both flows (the cluster runs as many as each instance count)")
	fs.BoolVar(&cfg.AccessLog, "access-log", cfg.AccessLog, "every role formats a log line per HTTP request, as converge dev does by default (the lines are not shown)")
	fs.DurationVar(&cfg.LimitsTime, "limits-time", cfg.LimitsTime, "how long each raw limit (fsync, SQLite or PostgreSQL and pgbench, publish one by one, publish batched) is measured per round")
	fs.StringVar(&cfg.Dir, "dir", "", "`directory` on the disk to measure, where each run gets a fresh data directory, removed after it unless a cluster flow failed there (default: the system's temporary directory)")
	fs.StringVar(&cfg.Profile, "profile", "", "embedded: also CPU-profile each flow's load run into this `directory` (round-N-bare-chain.pprof, round-N-converge.pprof), every goroutine labelled with its role (client, lb, gateway, stub, order, inventory, broker): go tool pprof -tags FILE")
	outDir := fs.String("out", "", "also write bench.json (every round's figures) and bench.svg (the summary as bars) into this `directory`")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	loadDefaults(&cfg.Load, fs, getenv)
	if cfg.Topology == bench.Cluster {
		var err error
		if cfg.Cluster.Instances, err = bench.ParseInstances(*instances); err != nil {
			return usageError{"bench: " + err.Error()}
		}
		if cfg.Cluster.Binary == "" {
			if cfg.Cluster.Binary, err = os.Executable(); err != nil {
				return fmt.Errorf("bench: the converge binary: %w", err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{"bench: " + err.Error()}
	}
	if cfg.Topology == bench.Cluster { // checked last: the flags' own errors first
		var err error
		if cfg.Cluster.Pgbench, err = exec.LookPath(cfg.Cluster.Pgbench); err != nil {
			return usageError{fmt.Sprintf("bench: the cluster topology compares with pgbench: %v (Debian: apt install postgresql-client)", err)}
		}
	}
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			return fmt.Errorf("bench: --profile: %w", err)
		}
	}
	cfg.OnStep = func(s string) { fmt.Fprintln(stderr, "bench:", s) }
	// The roles log as converge dev's do, records formatted and all, but
	// nowhere: a failure shows in the load's figures and errors.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := bench.Run(ctx, cfg, log)
	if len(res.Rounds) > 0 {
		if perr := res.Print(stdout); perr != nil {
			err = errors.Join(err, perr)
		}
		if *outDir != "" {
			if werr := res.WriteFiles(*outDir); werr != nil {
				return errors.Join(err, werr)
			}
			fmt.Fprintf(stdout, "files: %s (and %s)\n", filepath.Join(*outDir, bench.FileJSON), bench.FileSVG)
		}
		if cfg.Profile != "" {
			fmt.Fprintf(stdout, "CPU profiles: %s (go tool pprof -tags FILE)\n", filepath.Join(cfg.Profile, "round-*-*.pprof"))
		}
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
