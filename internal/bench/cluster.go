package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/cache/rediscache"
	"github.com/convergehq/converge/internal/cluster"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
)

// Topologies Run measures.
const (
	Embedded = "embedded"
	Cluster  = "cluster"
)

// ClusterConfig is what the cluster topology needs besides Config.
type ClusterConfig struct {
	// Binary is the converge executable every process of the cluster runs.
	Binary string `json:"-"`
	// Postgres is the URL of a database on the PostgreSQL server to
	// measure; each flow and limit creates databases of its own beside
	// it, dropped after it.
	Postgres string `json:"-"`
	// Cache is the Redis the services share (redis://host:port/N); each
	// flow's keys have a prefix of their own.
	Cache string `json:"-"`
	// Instances are the counts measured: each flow runs that many order
	// services, inventory services and gateways (and always 3 brokers).
	Instances []int `json:"instances"`
	// Pgbench is the pgbench executable that measures the order
	// transaction on the same server.
	Pgbench string `json:"-"`
}

// MaxInstances bounds each of ClusterConfig.Instances: every order and
// inventory instance may open store.PostgresConns connections, and the
// server's max_connections is 100 by default.
const MaxInstances = 8

func (c ClusterConfig) validate() error {
	if e, err := store.ParseURL(c.Postgres); err != nil || e != store.Postgres {
		return errors.New("the cluster topology needs PostgreSQL: --postgres postgres://... is missing or not a postgres:// URL")
	}
	if !strings.HasPrefix(c.Cache, "redis://") && !strings.HasPrefix(c.Cache, "rediss://") {
		return errors.New("the cluster topology needs Redis: --cache redis://host:6379/N is missing")
	}
	if len(c.Instances) == 0 {
		return errors.New("instances: give at least one count")
	}
	for i, n := range c.Instances {
		if n < 1 || n > MaxInstances {
			return fmt.Errorf("instances must each be 1 to %d, got %d", MaxInstances, n)
		}
		if slices.Contains(c.Instances[:i], n) {
			return fmt.Errorf("instances: %d is given twice", n)
		}
	}
	if c.Binary == "" {
		return errors.New("the cluster topology needs the converge binary")
	}
	if c.Pgbench == "" {
		return errors.New("the cluster topology compares with pgbench, which is missing (Debian: apt install postgresql-client)")
	}
	return nil
}

// ParseInstances reads a comma-separated list of instance counts, as
// --instances takes it.
func ParseInstances(s string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("instances: %q is not a number", f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// ClusterFlow is one load run of the cluster with Instances of each
// service.
type ClusterFlow struct {
	Instances int `json:"instances"`
	Flow
	// Ratio is Flow.Rate over the round's pgbench rate for the order
	// transaction.
	Ratio float64 `json:"ratio_to_pgbench"`
	// Parts splits the machine's CPU per order (Flow.CPU) by part: the
	// load client, each role's processes, PostgreSQL, Redis and the rest
	// of the machine. Empty where /proc is missing.
	Parts []PartCPU `json:"cpu_by_part,omitempty"`
}

// clusterFlow is r's cluster flow with n instances of each service, zero
// if it has none. A round holds its flows sorted by instances; the
// config's counts are in the order given.
func (r Round) clusterFlow(n int) ClusterFlow {
	for _, f := range r.Cluster {
		if f.Instances == n {
			return f
		}
	}
	return ClusterFlow{}
}

// runClusterRound runs the cluster flow with each instance count (in
// reverse order on odd rounds), then the limits: disk fsync, the order
// transaction on PostgreSQL by pgbench and by the order service's own
// code, and JetStream's durable R3 publish, measured on the brokers of the
// flow with the fewest instances, before its load.
func runClusterRound(ctx context.Context, cfg Config, i int, dir string, log *slog.Logger, step func(string, ...any)) (Round, error) {
	var r Round
	counts := slices.Clone(cfg.Cluster.Instances)
	if i%2 == 1 {
		slices.Reverse(counts)
	}
	fewest := slices.Min(counts)
	for _, n := range counts {
		step("round %d/%d: converge cluster, %d of each service", i+1, cfg.Rounds, n)
		limits := n == fewest
		if limits {
			step("round %d/%d: JetStream R3 publish limits (%s each), before the load", i+1, cfg.Rounds, cfg.LimitsTime)
		}
		fl, err := runClusterFlow(ctx, cfg, n, dir, limits, &r.Limits, log)
		if err != nil {
			return r, fmt.Errorf("round %d, cluster with %d of each service: %w", i+1, n, err)
		}
		r.Cluster = append(r.Cluster, fl)
	}
	slices.SortFunc(r.Cluster, func(a, b ClusterFlow) int { return a.Instances - b.Instances })
	step("round %d/%d: limits (%s each)", i+1, cfg.Rounds, cfg.LimitsTime)
	var err error
	if r.Limits.Fsync, err = fsyncRate(ctx, dir, cfg.LimitsTime); err != nil {
		return r, fmt.Errorf("round %d, limits: disk fsync: %w", i+1, causeOf(ctx, err))
	}
	clients := cfg.Load.Concurrency
	if r.Limits.Pgbench, r.Limits.PgbenchCPU, err = pgbenchRate(ctx, cfg.Cluster, clients, cfg.LimitsTime, dir); err != nil {
		return r, fmt.Errorf("round %d, limits: pgbench: %w", i+1, causeOf(ctx, err))
	}
	if r.Limits.PostgresOrder, err = postgresOrderRate(ctx, cfg.Cluster.Postgres, clients, cfg.LimitsTime); err != nil {
		return r, fmt.Errorf("round %d, limits: PostgreSQL order transaction: %w", i+1, causeOf(ctx, err))
	}
	for k := range r.Cluster {
		if r.Limits.Pgbench > 0 {
			r.Cluster[k].Ratio = r.Cluster[k].Rate / r.Limits.Pgbench
		}
	}
	return r, nil
}

// runClusterFlow starts the cluster topology with n of each service on
// fresh databases, a fresh key prefix and a fresh data directory under
// dir, optionally measures the publish limits on its brokers, drives it,
// checks the invariants once it has settled and removes it all but, after
// a failure, the data directory with the processes' logs.
func runClusterFlow(ctx context.Context, cfg Config, n int, dir string, measure bool, into *Limits, log *slog.Logger) (_ ClusterFlow, err error) {
	data, err := os.MkdirTemp(dir, "converge-bench-cluster-")
	if err != nil {
		return ClusterFlow{}, err
	}
	defer func() {
		if err != nil { // the processes' logs say why: kept
			err = fmt.Errorf("%w (the processes' logs are kept in %s)", err, filepath.Join(data, "logs"))
			return
		}
		err = os.RemoveAll(data)
	}()
	orderDB, dropOrders, err := freshDatabase(ctx, cfg.Cluster.Postgres, "orders")
	if err != nil {
		return ClusterFlow{}, err
	}
	defer func() { err = errors.Join(err, dropOrders()) }()
	invDB, dropInventory, err := freshDatabase(ctx, cfg.Cluster.Postgres, "inventory")
	if err != nil {
		return ClusterFlow{}, err
	}
	defer func() { err = errors.Join(err, dropInventory()) }()

	prefix := "converge-bench-" + strings.ToLower(rand.Text()[:12]) + ":"
	defer func() { err = errors.Join(err, purge(ctx, cfg.Cluster.Cache, prefix)) }()
	ccfg := cluster.Config{
		Binary: cfg.Cluster.Binary, DataDir: data, Addr: "127.0.0.1:0",
		APIKey: "bench-" + rand.Text(), AdminKey: "bench-admin-" + rand.Text(),
		OrderDB: orderDB, InventoryDB: invDB, Cache: cfg.Cluster.Cache,
		CachePrefix: prefix, BrokerSync: true,
		Brokers: 3, Orders: n, Inventories: n, Gateways: n,
	}
	if !cfg.AccessLog {
		ccfg.Env = append(ccfg.Env, "CONVERGE_ACCESS_LOG=false")
	}
	c, err := cluster.Start(ctx, ccfg, log)
	if err != nil {
		return ClusterFlow{}, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		err = errors.Join(err, c.Shutdown(sctx))
	}()
	if measure {
		cc := broker.ClientConfig{URLs: strings.Split(c.NATSURL, ","), Name: "converge-bench", User: c.NATSUser, Password: c.NATSPassword}
		if into.PublishOne, into.PublishBatch, err = publishRatesOn(ctx, cc, 3, cfg.LimitsTime, log); err != nil {
			return ClusterFlow{}, fmt.Errorf("JetStream R3 publish: %w", err)
		}
	}
	before, err := sampleParts(c)
	if err != nil {
		return ClusterFlow{}, fmt.Errorf("CPU by part: %w", err)
	}
	fl, err := drive(ctx, cfg.Load, c.LBURL, ccfg.APIKey, "")
	if err != nil {
		return ClusterFlow{}, err
	}
	after, err := sampleParts(c)
	if err != nil {
		return ClusterFlow{}, fmt.Errorf("CPU by part: %w", err)
	}
	cf := ClusterFlow{Instances: n, Flow: fl, Parts: before.since(after, fl.Converged, fl.CPU.PerUnit)}
	return cf, checkSettles(ctx, orderDB, invDB, settleTime)
}

// purge deletes the keys a flow's services left under prefix, once they
// have stopped.
func purge(ctx context.Context, url, prefix string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	c, err := rediscache.New(ctx, url, rediscache.Options{Prefix: prefix})
	if err != nil {
		return err
	}
	return errors.Join(c.Purge(ctx), c.Close())
}

// freshDatabase creates an empty database on the server of base, named
// after what, and returns its URL and a function that drops it.
func freshDatabase(ctx context.Context, base, what string) (string, func() error, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("--postgres: %w", err)
	}
	admin, err := store.Open(ctx, base)
	if err != nil {
		return "", nil, err
	}
	name := "converge_bench_" + strings.ToLower(rand.Text()[:12]) + "_" + what
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		return "", nil, errors.Join(fmt.Errorf("create database %s on %s: %w", name, store.Redact(base), err), admin.Close())
	}
	drop := func() error {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// FORCE: a connection a stopped process left must not keep it.
		_, err := admin.ExecContext(dctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`)
		if err != nil {
			err = fmt.Errorf("drop database %s: %w", name, err)
		}
		return errors.Join(err, admin.Close())
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// pgbenchScript is the order transaction's shape: the order's row and its
// order.created event in the outbox, one commit. Its ids are random (v4)
// UUIDs where the service's are time-ordered (v7), so its inserts spread
// over the primary keys' indexes where the service's land at their right
// edge: if anything, pgbench is the slower of the two for that.
const pgbenchScript = `\set n random(1, 2000000000)
BEGIN;
INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at, accepted_at)
  VALUES (gen_random_uuid()::text, 'bench-' || :n, 'PENDING', '', '[{"sku":"LOAD-1","quantity":2}]', 1, 1, 1);
INSERT INTO outbox (event_id, event_type, subject, event_subject, payload, traceparent, created_at)
  VALUES (gen_random_uuid()::text, 'io.converge.order.created', 'orders.created', gen_random_uuid()::text,
          convert_to(repeat('x', 300), 'UTF8'), '', 1);
COMMIT;
`

var (
	pgbenchTPS = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgbenchTxs = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
)

// pgbenchRate runs pgbench with clients clients for d on a fresh database
// with the order service's schema, and returns its transactions a second
// and the machine's CPU per transaction meanwhile.
func pgbenchRate(ctx context.Context, cc ClusterConfig, clients int, d time.Duration, dir string) (_ float64, _ CPU, err error) {
	db, drop, err := migratedOrderDB(ctx, cc.Postgres)
	if err != nil {
		return 0, CPU{}, err
	}
	defer func() { err = errors.Join(err, drop()) }()
	script, err := os.CreateTemp(dir, "pgbench-*.sql")
	if err != nil {
		return 0, CPU{}, err
	}
	defer func() { err = errors.Join(err, os.Remove(script.Name())) }()
	if _, err := script.WriteString(pgbenchScript); err != nil {
		return 0, CPU{}, errors.Join(err, script.Close())
	}
	if err := script.Close(); err != nil {
		return 0, CPU{}, err
	}
	// pgbench takes whole seconds, and the password from the environment
	// rather than the command line, which every user of the machine sees.
	secs := max(1, int(d.Round(time.Second)/time.Second))
	u, err := url.Parse(db)
	if err != nil {
		return 0, CPU{}, err
	}
	env := os.Environ()
	if pw, ok := u.User.Password(); ok {
		env = append(env, "PGPASSWORD="+pw)
		u.User = url.User(u.User.Username())
	}
	threads := min(clients, runtime.NumCPU())
	cmd := exec.CommandContext(ctx, cc.Pgbench, "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(secs), "-f", script.Name(), u.String())
	cmd.Env = env
	before, err := readCPU()
	if err != nil {
		return 0, CPU{}, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, CPU{}, fmt.Errorf("%s: %w\n%s", cc.Pgbench, err, out)
	}
	after, err := readCPU()
	if err != nil {
		return 0, CPU{}, err
	}
	m, n := pgbenchTPS.FindSubmatch(out), pgbenchTxs.FindSubmatch(out)
	if m == nil || n == nil {
		return 0, CPU{}, fmt.Errorf("%s printed no tps or transactions line:\n%s", cc.Pgbench, out)
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return 0, CPU{}, fmt.Errorf("%s: tps %q: %w", cc.Pgbench, m[1], err)
	}
	txs, err := strconv.Atoi(string(n[1]))
	if err != nil {
		return 0, CPU{}, fmt.Errorf("%s: transactions %q: %w", cc.Pgbench, n[1], err)
	}
	// Its connections' start and end are in the span too: a little more
	// CPU per commit than the steady state.
	return tps, before.since(after, txs), nil
}

// migratedOrderDB creates a fresh database with the order service's
// migrations applied, and returns its URL and a function that drops it.
func migratedOrderDB(ctx context.Context, base string) (_ string, _ func() error, err error) {
	u, drop, err := freshDatabase(ctx, base, "limits")
	if err != nil {
		return "", nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, drop())
		}
	}()
	db, err := store.Open(ctx, u)
	if err != nil {
		return "", nil, err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	if _, err := ordersql.Open(ctx, db); err != nil {
		return "", nil, err
	}
	return u, drop, nil
}

// postgresOrderRate is orderTxRate on a fresh database: what pgbench
// measures, through the order service's code.
func postgresOrderRate(ctx context.Context, base string, clients int, d time.Duration) (_ float64, err error) {
	u, drop, err := freshDatabase(ctx, base, "limits")
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, drop()) }()
	return orderTxRate(ctx, u, clients, d)
}
