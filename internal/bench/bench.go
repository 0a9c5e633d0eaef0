// Package bench measures converge against what it is made of, in one run
// on one machine: the bare chain (the real load balancer and gateways in
// front of Stub, which answers at once), the real flow (the embedded system
// on a fresh data directory with its durable defaults) under the same load,
// and the raw limits of the parts an order crosses (disk fsync, SQLite's
// order transaction, JetStream's durable publish). Rounds alternate which
// flow goes first, so that a machine getting busier or quieter weighs on
// both alike; the figures of every round are kept.
//
// The cluster topology (see runClusterRound) measures the production
// topology instead, with several instance counts, beside pgbench running
// the order transaction on the same PostgreSQL. Every flow also reports
// the machine's CPU per converged order, so that a figure says whether the
// cores bound it.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/check"
	"github.com/convergehq/converge/internal/load"
	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/system"
)

// Config is one bench run.
type Config struct {
	// Topology is what is measured: Embedded (the bare chain beside the
	// embedded system) or Cluster (the cluster topology with each of
	// Cluster.Instances, beside pgbench).
	Topology string        `json:"topology"`
	Cluster  ClusterConfig `json:"cluster,omitzero"`
	// Load is the load of every flow; its URL and APIKey are set for each.
	Load       load.Config   `json:"load"`
	Rounds     int           `json:"rounds"`
	Gateways   int           `json:"gateways"`   // API gateways behind the load balancer, in both flows
	AccessLog  bool          `json:"access_log"` // every role logs a line per request, as converge dev does by default
	LimitsTime time.Duration `json:"limits_time_ns"`
	// Dir is where each flow and limit gets a fresh directory, removed
	// after it: the disk measured. Empty: the system's temporary directory.
	Dir string `json:"dir"`
	// Profile, if set, is a directory (it must exist) where each flow's
	// load run is CPU-profiled (runtime/pprof) into round-N-FLOW.pprof,
	// FLOW bare-chain or converge; every goroutine carries the label role
	// (client, lb, gateway, stub, order, inventory, broker). Embedded only:
	// the cluster runs a process per role.
	Profile string `json:"profile,omitempty"`
	// OnStep, if set, is told what starts, for a progress line.
	OnStep func(string) `json:"-"`
}

// MaxRounds bounds Config.Rounds.
const MaxRounds = 100

// DefaultConfig returns the defaults of converge bench.
func DefaultConfig() Config {
	lc := load.DefaultConfig()
	lc.APIKey = "bench" // replaced by each flow's own; Validate wants one
	return Config{
		Topology:   Embedded,
		Load:       lc,
		Rounds:     3,
		Gateways:   system.DefaultConfig().Gateways,
		AccessLog:  system.DefaultConfig().AccessLog,
		LimitsTime: 3 * time.Second,
	}
}

// Validate reports the first problem of c.
func (c Config) Validate() error {
	switch {
	case c.Rounds < 1 || c.Rounds > MaxRounds:
		return fmt.Errorf("rounds must be 1 to %d, got %d", MaxRounds, c.Rounds)
	case c.Gateways < 1 || c.Gateways > 64:
		return fmt.Errorf("gateways must be 1 to 64, got %d", c.Gateways)
	case c.LimitsTime <= 0 || c.LimitsTime > time.Minute:
		return fmt.Errorf("limits time must be more than 0 and at most 1m, got %s", c.LimitsTime)
	}
	if err := c.Load.Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), load.ErrConfig.Error()+": "))
	}
	switch c.Topology {
	case Embedded:
	case Cluster:
		if c.Profile != "" {
			return errors.New("profile: the embedded topology only (the cluster runs a process per role, and its summary splits the CPU by part from /proc)")
		}
		return c.Cluster.validate()
	default:
		return fmt.Errorf("topology must be %s or %s, got %q", Embedded, Cluster, c.Topology)
	}
	return nil
}

// Flow is what one load run measured of a flow.
type Flow struct {
	Accepted   int     `json:"accepted"`
	Converged  int     `json:"converged"`
	Rate       float64 `json:"converged_per_s"` // end to end: converged orders over the span from the first POST to the last final answer
	AcceptRate float64 `json:"accepted_per_s"`
	// ToFinal is the order service's own time from created_at to the
	// final status (0 for the bare chain, whose stub decides at once).
	ToFinalP50 time.Duration `json:"to_final_p50_ns"`
	ToFinalP99 time.Duration `json:"to_final_p99_ns"`
	// SeenFinal is the client's, from sending the POST to the answer
	// with the final status.
	SeenFinalP50 time.Duration `json:"seen_final_p50_ns"`
	SeenFinalP99 time.Duration `json:"seen_final_p99_ns"`
	// CPU is the machine's, over the load run, per converged order: the
	// system's processes, the servers it uses and the load client alike.
	CPU CPU `json:"cpu"`
}

func flowOf(rep load.Report) Flow {
	return Flow{
		Accepted: rep.Accepted, Converged: rep.Converged,
		Rate: rep.EndToEndRate(), AcceptRate: rep.AcceptRate(),
		ToFinalP50: rep.ToFinal.P50, ToFinalP99: rep.ToFinal.P99,
		SeenFinalP50: rep.SeenFinal.P50, SeenFinalP99: rep.SeenFinal.P99,
	}
}

// Round is one round's figures: Bare, Real and Ratio of the embedded
// topology, or Cluster of the cluster topology.
type Round struct {
	Bare    Flow          `json:"bare_chain,omitzero"`
	Real    Flow          `json:"converge,omitzero"`
	Ratio   float64       `json:"ratio,omitempty"` // Real.Rate / Bare.Rate
	Cluster []ClusterFlow `json:"cluster,omitempty"`
	Limits  Limits        `json:"limits"`
}

// Result is a whole run.
type Result struct {
	Topology string    `json:"topology"`
	Config   Config    `json:"config"`
	Started  time.Time `json:"started"`
	Rounds   []Round   `json:"rounds"`
}

// Run runs cfg.Rounds rounds. In the embedded topology each runs the bare
// chain and the real flow (in turn first) under the same load, then
// measures the limits; in the cluster topology, see runClusterRound. A load
// run that fails (a request failed, an order stayed PENDING), or a real
// flow after which an invariant of converge check fails, fails the bench:
// a rate that does not converge correctly is not a figure. The Result holds
// the rounds done even when the error is not nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	res := Result{Topology: cfg.Topology, Config: cfg, Started: time.Now().UTC()}
	res.Config.Load.URL, res.Config.Load.APIKey = "", "" // each flow's own
	step := func(format string, args ...any) {
		if cfg.OnStep != nil {
			cfg.OnStep(fmt.Sprintf(format, args...))
		}
	}
	dir := cfg.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	for i := range cfg.Rounds {
		if cfg.Topology == Cluster {
			r, err := runClusterRound(ctx, cfg, i, dir, log, step)
			if err != nil {
				return res, err
			}
			res.Rounds = append(res.Rounds, r)
			var flows []string
			for _, f := range r.Cluster {
				flows = append(flows, fmt.Sprintf("%d: %.0f orders/s (%.2f)", f.Instances, f.Rate, f.Ratio))
			}
			step("round %d/%d: converge cluster by instances of each service %s; pgbench %.0f, PostgreSQL order tx %.0f commits/s; fsync %.0f/s; R3 publish %.0f (one by one), %.0f (batch %d) msgs/s",
				i+1, cfg.Rounds, strings.Join(flows, ", "), r.Limits.Pgbench, r.Limits.PostgresOrder, r.Limits.Fsync, r.Limits.PublishOne, r.Limits.PublishBatch, publishBatch)
			continue
		}
		var r Round
		profile := func(flow string) string {
			if cfg.Profile == "" {
				return ""
			}
			return filepath.Join(cfg.Profile, fmt.Sprintf("round-%d-%s.pprof", i+1, flow))
		}
		flows := []struct {
			name string
			run  func() (Flow, error)
			into *Flow
		}{
			{"bare chain", func() (Flow, error) { return runBare(ctx, cfg, profile("bare-chain"), log) }, &r.Bare},
			{"converge embedded", func() (Flow, error) { return runReal(ctx, cfg, dir, profile("converge"), log) }, &r.Real},
		}
		if i%2 == 1 {
			slices.Reverse(flows)
		}
		for _, f := range flows {
			step("round %d/%d: %s", i+1, cfg.Rounds, f.name)
			fl, err := f.run()
			if err != nil {
				return res, fmt.Errorf("round %d, %s: %w", i+1, f.name, err)
			}
			*f.into = fl
		}
		if r.Bare.Rate > 0 {
			r.Ratio = r.Real.Rate / r.Bare.Rate
		}
		step("round %d/%d: limits (%s each)", i+1, cfg.Rounds, cfg.LimitsTime)
		var err error
		if r.Limits, err = measureLimits(ctx, dir, cfg.LimitsTime, log); err != nil {
			return res, fmt.Errorf("round %d, limits: %w", i+1, causeOf(ctx, err))
		}
		res.Rounds = append(res.Rounds, r)
		step("round %d/%d: bare chain %.0f, converge %.0f orders/s (%.2f); fsync %.0f/s, SQLite %.0f commits/s, publish %.0f (one by one), %.0f (batch %d) msgs/s",
			i+1, cfg.Rounds, r.Bare.Rate, r.Real.Rate, r.Ratio, r.Limits.Fsync, r.Limits.SQLiteOrder, r.Limits.PublishOne, r.Limits.PublishBatch, publishBatch)
	}
	return res, nil
}

// causeOf is why ctx ended, if it did, else err: a limit cut short says
// it was interrupted rather than how its last step failed.
func causeOf(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// runBare serves Stub behind cfg.Gateways gateways and a load balancer,
// started by the same functions as converge dev's, and drives it,
// CPU-profiled into the file profile if it is not empty.
func runBare(ctx context.Context, cfg Config, profile string, log *slog.Logger) (_ Flow, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Flow{}, err
	}
	stub := &http.Server{Handler: Stub(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	pprof.Do(ctx, pprof.Labels("role", "stub"), func(context.Context) {
		go func() { served <- stub.Serve(ln) }()
	})
	stubURL := "http://" + ln.Addr().String()

	var edges []*role.Edge // in the order started; stopped in reverse
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, e := range slices.Backward(edges) {
			err = errors.Join(err, e.Shutdown(sctx))
		}
		err = errors.Join(err, stub.Shutdown(sctx))
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}()
	const key = "bench-bare-chain"
	var gws []string
	for i := range cfg.Gateways {
		gw, err := role.Labeled(ctx, "gateway", func(ctx context.Context) (*role.Edge, error) {
			return role.StartGateway(ctx, role.GatewayConfig{
				Addr: "127.0.0.1:0", APIKey: key, OrderURLs: stubURL, InventoryURLs: stubURL, AccessLog: cfg.AccessLog,
			}, log.With("role", "gateway", "instance", i+1))
		})
		if err != nil {
			return Flow{}, err
		}
		edges = append(edges, gw)
		gws = append(gws, gw.URL())
	}
	lb, err := role.Labeled(ctx, "lb", func(ctx context.Context) (*role.Edge, error) {
		return role.StartLB(ctx, role.LBConfig{
			Addr: "127.0.0.1:0", Gateways: strings.Join(gws, ","), Policy: system.DefaultConfig().LBPolicy, AccessLog: cfg.AccessLog,
		}, log.With("role", "lb"))
	})
	if err != nil {
		return Flow{}, err
	}
	edges = append(edges, lb)
	return drive(ctx, cfg.Load, lb.URL(), key, profile)
}

// runReal starts the embedded system on a fresh data directory under dir,
// with converge dev's durable defaults, drives it (CPU-profiled into the
// file profile if it is not empty), and checks the invariants of converge
// check once it has settled.
func runReal(ctx context.Context, cfg Config, dir, profile string, log *slog.Logger) (_ Flow, err error) {
	data, err := os.MkdirTemp(dir, "converge-bench-")
	if err != nil {
		return Flow{}, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(data)) }()
	sc := system.DefaultConfig()
	sc.Addr, sc.DataDir, sc.BrokerPort, sc.Seed = "127.0.0.1:0", data, 0, false
	sc.Gateways, sc.AccessLog = cfg.Gateways, cfg.AccessLog
	s, err := system.Start(ctx, sc, log)
	if err != nil {
		return Flow{}, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err = errors.Join(err, s.Shutdown(sctx))
	}()
	fl, err := drive(ctx, cfg.Load, s.LBURL, s.APIKey, profile)
	if err != nil {
		return Flow{}, err
	}
	return fl, checkSettles(ctx, s.OrderDB, s.InventoryDB, settleTime)
}

// settleTime is how long the invariants may take to hold once the load
// has seen every order final: the relays still mark the last events
// published.
const settleTime = 30 * time.Second

// checkSettles runs converge check's invariants over the order and
// inventory databases at orderURL and inventoryURL until all hold, and
// fails if one still does not after d: a rate reached by breaking one is
// not a figure.
func checkSettles(ctx context.Context, orderURL, inventoryURL string, d time.Duration) (err error) {
	orders, err := store.Open(ctx, orderURL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, orders.Close()) }()
	inventory, err := store.Open(ctx, inventoryURL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, inventory.Close()) }()
	results, err := check.Settle(ctx, orders, inventory, d)
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range check.Failed(results) {
		failed = append(failed, r.Name+" ("+r.Detail+")")
	}
	if len(failed) > 0 {
		return fmt.Errorf("converge check: %d invariant(s) still failed %s after the load: %s", len(failed), d, strings.Join(failed, "; "))
	}
	return nil
}

// drive runs the load lc against url with the API key key and measures the
// machine's CPU over it; if profile is not empty, it also CPU-profiles the
// process into that file.
func drive(ctx context.Context, lc load.Config, url, key, profile string) (_ Flow, err error) {
	lc.URL, lc.APIKey = url, key
	client := load.NewClient(lc.Connections())
	defer client.CloseIdleConnections()
	if profile != "" {
		stop, perr := startProfile(profile)
		if perr != nil {
			return Flow{}, perr
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	before, err := readCPU()
	if err != nil {
		return Flow{}, err
	}
	var rep load.Report
	// The client's goroutines, and its connections', are labelled too.
	pprof.Do(ctx, pprof.Labels("role", "client"), func(ctx context.Context) {
		rep, err = load.Run(ctx, lc, client)
	})
	if err != nil {
		return Flow{}, err
	}
	after, err := readCPU()
	if err != nil {
		return Flow{}, err
	}
	fl := flowOf(rep)
	fl.CPU = before.since(after, rep.Converged)
	return fl, nil
}

// startProfile starts CPU-profiling the process into the file path and
// returns the function that stops it and closes the file. The profile
// is one of the process: it fails if another is being taken (go test
// -cpuprofile).
func startProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	w := &firstError{w: f}
	if err := pprof.StartCPUProfile(w); err != nil {
		return nil, errors.Join(fmt.Errorf("profile %s: %w", path, err), f.Close(), os.Remove(path))
	}
	return func() error {
		pprof.StopCPUProfile() // it reports no write error: w kept it
		if err := errors.Join(w.err, f.Close()); err != nil {
			return fmt.Errorf("profile %s: %w", path, err)
		}
		return nil
	}, nil
}

// firstError writes to w and keeps the first error, for a writer whose
// user drops them.
type firstError struct {
	w   io.Writer
	err error
}

func (f *firstError) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.w.Write(p)
	f.err = err
	return n, err
}
