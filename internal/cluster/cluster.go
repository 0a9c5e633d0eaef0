// Package cluster runs converge's production topology on one machine, as
// separate processes of the same binary: 3 broker nodes forming a
// JetStream cluster (R3 streams), 2 order and 2 inventory instances on
// PostgreSQL, sharing a Redis cache, 2 gateways and the load balancer.
// `converge dev --topology cluster` is a thin command over it, and it is
// the harness the fault suite uses: every process has a name and can be
// stopped, killed, paused and started again by it.
package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/store"
)

// Config is what the cluster is told.
type Config struct {
	Binary         string // the converge executable to start once per process
	DataDir        string // broker stores, logs, credentials
	Addr           string // the load balancer's address; port 0 picks a free one
	APIKey         string
	AdminKey       string // the gateways' admin key (/api/v1/admin/)
	OrderDB        string // postgres://...
	InventoryDB    string // postgres://...
	Cache          string // redis://...
	CachePrefix    string
	Seed           bool
	BrokerSync     bool
	RestartCrashed bool // start a process again when it dies unexpectedly
	// UIAddr, if set, is where this process serves the live page of the
	// whole cluster, with its stop and start buttons (see page.go).
	UIAddr string
	// Env is added to the environment of every process (after this
	// process's own, so it wins): OTEL_* variables, CONVERGE_ACCESS_LOG.
	Env []string
	// Instances of each role; zero takes the defaults (3 brokers, 2 of
	// every service, 2 gateways).
	Brokers, Orders, Inventories, Gateways int
}

// Validate checks cfg before anything starts, naming the flag that is
// missing or wrong.
func (cfg Config) Validate() error {
	for _, f := range []struct{ flag, url string }{{"--order-db", cfg.OrderDB}, {"--inventory-db", cfg.InventoryDB}} {
		if f.url == "" {
			return fmt.Errorf("the cluster topology needs PostgreSQL: %s postgres://... is missing", f.flag)
		}
		if e, err := store.ParseURL(f.url); err != nil || e != store.Postgres {
			return fmt.Errorf("the cluster topology needs PostgreSQL: %s must be a postgres:// URL", f.flag)
		}
	}
	if !strings.HasPrefix(cfg.Cache, "redis://") && !strings.HasPrefix(cfg.Cache, "rediss://") {
		return errors.New("the cluster topology needs a shared cache: --cache redis://host:6379/N is missing")
	}
	if cfg.Binary == "" || cfg.DataDir == "" || cfg.Addr == "" || cfg.APIKey == "" || cfg.AdminKey == "" {
		return errors.New("cluster: binary, data directory, address, API key and admin key are required")
	}
	if cfg.AdminKey == cfg.APIKey {
		return errors.New("the admin key must differ from the API key")
	}
	return nil
}

// Process is one process of the cluster.
type Process struct {
	Role    string // broker, order, inventory, gateway, lb
	Name    string // unique: broker-1, order-2, ...
	Addr    string // host:port it serves on (clients for a broker)
	Metrics string // URL of its Prometheus metrics
	Log     string // file its output goes to

	args []string
	env  []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current cmd has been waited for
	stopping bool          // an exit now is asked for, not a crash
	waitErr  error         // how the current cmd exited, once exited is closed
}

// PID is the process's current PID, 0 when it is not running.
func (p *Process) PID() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether the process is running now.
func (p *Process) Running() bool {
	select {
	case <-p.exitedChan():
		return false
	default:
		return p.exitedChan() != nil
	}
}

// Cluster is a running cluster.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	lock *role.DataLock

	// NATSURL lists the brokers' client URLs; NATSUser and NATSPassword
	// are the services' credentials.
	NATSURL, NATSUser, NATSPassword string
	LBURL                           string
	// UIURL is the base URL of the live page this process serves
	// (/ui/), when Config.UIAddr is set.
	UIURL string

	procs  []*Process // in start order
	page   *pageServer
	failed chan error
	done   chan struct{}

	// mu orders restarts against Shutdown: once stopping is set, no
	// process is started again, so wg's count only goes down.
	mu       sync.Mutex
	stopping bool
	wg       sync.WaitGroup
}

// Start starts the processes tier by tier, each tier once the one before
// answers: brokers, setup (streams and consumers, once), inventory, order,
// gateways, load balancer. On error it stops what it started.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Cluster, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = withDefaults(cfg)
	c := &Cluster{cfg: cfg, log: log, failed: make(chan error, 16), done: make(chan struct{})}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = c.Shutdown(sctx) // the start error is the one to report
		}
	}()
	// Every address is chosen before anything is written; the load
	// balancer's, the one a user gives, is checked first.
	if err := checkFree(cfg.Addr); err != nil {
		return nil, err
	}
	// The ports handed out below, never one twice, nor the load balancer's
	// or the page's.
	given := map[int]bool{}
	for _, addr := range []string{cfg.Addr, cfg.UIAddr} {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.Atoi(port); err == nil {
				given[n] = true
			}
		}
	}
	// A load balancer on port 0 gets a free port of its own, as the other
	// processes do: the address must be known before it starts.
	if host, port, err := net.SplitHostPort(cfg.Addr); err == nil && port == "0" {
		ports, err := freePorts(given, 1)
		if err != nil {
			return nil, err
		}
		cfg.Addr = net.JoinHostPort(host, strconv.Itoa(ports[0]))
		c.cfg.Addr = cfg.Addr
	}
	// The page's address is held from now on: a port taken fails the
	// start before any process does.
	var pageLn net.Listener
	if cfg.UIAddr != "" {
		if pageLn, err = net.Listen("tcp", cfg.UIAddr); err != nil {
			return nil, fmt.Errorf("live page: listen on %s: %w", cfg.UIAddr, err)
		}
		defer func() {
			if err != nil {
				pageLn.Close()
			}
		}()
	}
	if c.lock, err = role.LockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.NATSUser = "converge"
	if c.NATSPassword, err = secret(filepath.Join(cfg.DataDir, "nats-password")); err != nil {
		return nil, err
	}
	routePassword, err := secret(filepath.Join(cfg.DataDir, "route-password"))
	if err != nil {
		return nil, err
	}

	clientPorts, err := freePorts(given, cfg.Brokers)
	if err != nil {
		return nil, err
	}
	clusterPorts, err := freePorts(given, cfg.Brokers)
	if err != nil {
		return nil, err
	}
	metricsPorts, err := freePorts(given, cfg.Brokers)
	if err != nil {
		return nil, err
	}
	var clientURLs []string
	for i := range cfg.Brokers {
		clientURLs = append(clientURLs, "nats://127.0.0.1:"+strconv.Itoa(clientPorts[i]))
	}
	c.NATSURL = strings.Join(clientURLs, ",")
	for i := range cfg.Brokers {
		var routes []string
		for j := range cfg.Brokers {
			if j != i {
				routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(clusterPorts[j]))
			}
		}
		name := fmt.Sprintf("broker-%d", i+1)
		metricsAddr := "127.0.0.1:" + strconv.Itoa(metricsPorts[i])
		p := c.add("broker", name, "127.0.0.1:"+strconv.Itoa(clientPorts[i]),
			[]string{"broker", "--data", filepath.Join(cfg.DataDir, name), "--port", strconv.Itoa(clientPorts[i]),
				"--name", name, "--cluster-name", "converge", "--cluster-port", strconv.Itoa(clusterPorts[i]),
				"--routes", strings.Join(routes, ","), "--sync=" + strconv.FormatBool(cfg.BrokerSync),
				"--metrics-addr", metricsAddr},
			"CONVERGE_USER="+c.NATSUser, "CONVERGE_PASSWORD="+c.NATSPassword,
			"CONVERGE_ROUTE_USER=route", "CONVERGE_ROUTE_PASSWORD="+routePassword)
		p.Metrics = "http://" + metricsAddr + "/metrics"
	}
	if err := c.startTier(ctx, "broker", tcpUp); err != nil {
		return nil, err
	}
	if err := c.setup(ctx); err != nil {
		return nil, err
	}

	natsEnv := []string{"CONVERGE_NATS=" + c.NATSURL, "CONVERGE_NATS_USER=" + c.NATSUser, "CONVERGE_NATS_PASSWORD=" + c.NATSPassword,
		"CONVERGE_CACHE=" + cfg.Cache, "CONVERGE_CACHE_PREFIX=" + cfg.CachePrefix}
	services := []struct {
		role, dbFlag, db string
		n                int
	}{{"inventory", "CONVERGE_INVENTORY_DB", cfg.InventoryDB, cfg.Inventories}, {"order", "CONVERGE_ORDER_DB", cfg.OrderDB, cfg.Orders}}
	urls := map[string][]string{}
	for _, s := range services {
		ports, err := freePorts(given, s.n)
		if err != nil {
			return nil, err
		}
		for i := range s.n {
			name := fmt.Sprintf("%s-%d", s.role, i+1)
			addr := "127.0.0.1:" + strconv.Itoa(ports[i])
			args := []string{s.role, "--addr", addr, "--instance", name}
			if s.role == "inventory" && cfg.Seed {
				args = append(args, "--seed")
			}
			c.add(s.role, name, addr, args, append([]string{s.dbFlag + "=" + s.db}, natsEnv...)...)
			urls[s.role] = append(urls[s.role], "http://"+addr)
		}
		if err := c.startTier(ctx, s.role, httpReady); err != nil {
			return nil, err
		}
	}

	ports, err := freePorts(given, cfg.Gateways)
	if err != nil {
		return nil, err
	}
	// The gateways' live page (/ui/) shows the broker nodes too.
	var brokerMetrics []string
	for _, p := range c.procs {
		if p.Role == "broker" {
			brokerMetrics = append(brokerMetrics, strings.TrimSuffix(p.Metrics, "/metrics"))
		}
	}
	var gateways []string
	for i := range cfg.Gateways {
		addr := "127.0.0.1:" + strconv.Itoa(ports[i])
		c.add("gateway", fmt.Sprintf("gateway-%d", i+1), addr,
			[]string{"gateway", "--addr", addr, "--order-url", strings.Join(urls["order"], ","), "--inventory-url", strings.Join(urls["inventory"], ","),
				"--ui-broker-metrics", strings.Join(brokerMetrics, ",")},
			"CONVERGE_API_KEY="+cfg.APIKey, "CONVERGE_ADMIN_KEY="+cfg.AdminKey)
		gateways = append(gateways, "http://"+addr)
	}
	if err := c.startTier(ctx, "gateway", httpReady); err != nil {
		return nil, err
	}
	c.add("lb", "lb", cfg.Addr, []string{"lb", "--addr", cfg.Addr, "--gateway-url", strings.Join(gateways, ",")})
	if err := c.startTier(ctx, "lb", httpReady); err != nil {
		return nil, err
	}
	c.LBURL = "http://" + cfg.Addr
	if pageLn != nil {
		if err := c.servePage(pageLn); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func withDefaults(cfg Config) Config {
	for _, f := range []*int{&cfg.Brokers, &cfg.Orders, &cfg.Inventories, &cfg.Gateways} {
		if *f == 0 {
			*f = 2
		}
	}
	if cfg.Brokers == 2 {
		cfg.Brokers = 3 // R3 needs three nodes
	}
	if cfg.CachePrefix == "" {
		cfg.CachePrefix = "converge:"
	}
	return cfg
}

// setup runs `converge setup` once and waits for it.
func (c *Cluster) setup(ctx context.Context) error {
	logPath := filepath.Join(c.cfg.DataDir, "logs", "setup.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, c.cfg.Binary, "setup", "--replicas", strconv.Itoa(min(c.cfg.Brokers, 3)))
	cmd.Env = append(append(os.Environ(), c.cfg.Env...), "CONVERGE_NATS="+c.NATSURL, "CONVERGE_NATS_USER="+c.NATSUser, "CONVERGE_NATS_PASSWORD="+c.NATSPassword)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("setup of streams and consumers failed (%w); see %s", err, logPath)
	}
	return nil
}

// add adds a process to start; its metrics are at its address unless the
// caller says otherwise.
func (c *Cluster) add(roleName, name, addr string, args []string, env ...string) *Process {
	p := &Process{
		Role: roleName, Name: name, Addr: addr, Metrics: "http://" + addr + "/metrics",
		Log:  filepath.Join(c.cfg.DataDir, "logs", name+".log"),
		args: args, env: env,
	}
	c.procs = append(c.procs, p)
	return p
}

// startTier starts every process of a role and waits until each is up.
func (c *Cluster) startTier(ctx context.Context, roleName string, up func(ctx context.Context, addr string) error) error {
	var tier []*Process
	for _, p := range c.procs {
		if p.Role == roleName {
			if err := c.spawn(p); err != nil {
				return err
			}
			tier = append(tier, p)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, p := range tier {
		for {
			err := up(ctx, p.Addr)
			if err == nil {
				break
			}
			select {
			case <-p.exitedChan():
				return fmt.Errorf("%s exited while starting (%s); see %s", p.Name, lastLine(p.Log), p.Log)
			case <-ctx.Done():
				return fmt.Errorf("%s did not come up on %s (%v); see %s", p.Name, p.Addr, err, p.Log)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (p *Process) exitedChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// spawn starts p and watches it: an exit nobody asked for is reported on
// Failed, and with RestartCrashed the process is started again.
func (c *Cluster) spawn(p *Process) error {
	out, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	cmd := exec.Command(c.cfg.Binary, p.args...)
	cmd.Env = append(append(os.Environ(), c.cfg.Env...), p.env...)
	cmd.Stdout, cmd.Stderr = out, out
	// A process group of its own: Ctrl-C in the terminal reaches dev only,
	// which then stops the processes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.stopping = cmd, exited, false
	p.mu.Unlock()
	c.wg.Go(func() {
		err := cmd.Wait()
		out.Close()
		p.mu.Lock()
		asked := p.stopping
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
		if asked {
			return
		}
		select {
		case <-c.done:
			return
		default:
		}
		crash := fmt.Errorf("%s (pid %d) exited unexpectedly: %v; see %s", p.Name, cmd.Process.Pid, err, p.Log)
		select {
		case c.failed <- crash:
		default:
		}
		if c.cfg.RestartCrashed {
			c.log.Warn("restarting", "process", p.Name)
			select {
			case <-c.done: // shutting down: Shutdown is waiting for us
				return
			case <-time.After(500 * time.Millisecond): // a crash loop must not spin
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			p.mu.Lock()
			// Not if shutting down, if Stop asked for this exit meanwhile, or
			// if Restart already started it again.
			skip := c.stopping || p.stopping || p.exited != exited
			p.mu.Unlock()
			if skip {
				return
			}
			if err := c.spawn(p); err != nil {
				c.log.Error("restart failed", "process", p.Name, "err", err)
			}
		}
	})
	return nil
}

// Processes lists the cluster's processes in start order.
func (c *Cluster) Processes() []*Process { return c.procs }

// Process returns the process called name, or nil.
func (c *Cluster) Process(name string) *Process {
	for _, p := range c.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Failed reports processes that died unexpectedly.
func (c *Cluster) Failed() <-chan error { return c.failed }

// Signal sends sig to process name: SIGKILL to crash it, SIGSTOP and
// SIGCONT to pause and resume it. A process killed this way counts as
// crashed (it is restarted with RestartCrashed).
func (c *Cluster) Signal(name string, sig syscall.Signal) error {
	p := c.Process(name)
	if p == nil {
		return fmt.Errorf("no process %q", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("%s is not running", name)
	}
	return p.cmd.Process.Signal(sig)
}

// Stop stops process name gracefully and waits for it.
func (c *Cluster) Stop(ctx context.Context, name string) error {
	p := c.Process(name)
	if p == nil {
		return fmt.Errorf("no process %q", name)
	}
	return stop(ctx, p)
}

// Restart starts process name again after Stop or a crash.
func (c *Cluster) Restart(name string) error {
	p := c.Process(name)
	if p == nil {
		return fmt.Errorf("no process %q", name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return errors.New("the cluster is shutting down")
	}
	if p.Running() {
		return fmt.Errorf("%s is still running", name)
	}
	return c.spawn(p)
}

func stop(ctx context.Context, p *Process) error {
	running, err := terminate(p)
	if !running || err != nil {
		return err
	}
	return await(ctx, p)
}

// terminate asks p to stop, SIGTERM after a SIGCONT in case it is paused,
// and reports whether it was running: one that had exited (crashed, or
// stopped before) has nothing to stop.
func terminate(p *Process) (running bool, err error) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil {
		return false, nil
	}
	select {
	case <-exited:
		return false, nil
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot stop
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return true, fmt.Errorf("stop %s: %w", p.Name, err)
	}
	return true, nil
}

// await waits for p to exit after terminate, killing it when ctx ends. A
// process asked to stop drains and exits 0; anything else is a failed
// shutdown, and its log says why.
func await(ctx context.Context, p *Process) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		p.mu.Lock()
		err := p.waitErr
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s did not stop cleanly: %v; see %s", p.Name, err, p.Log)
		}
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not stop in time and was killed", p.Name)
	}
}

// stopGrace is how long one process may take to stop after SIGTERM before
// it is killed: a service drains requests, finishes its batch and flushes
// its outbox (5 s at most) within it.
const stopGrace = 20 * time.Second

// Shutdown stops the live page's server, then the processes in the
// reverse order of start, the load balancer first and the brokers last,
// and reports any that did not exit cleanly in time.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	page := c.page
	if !c.stopping {
		c.stopping = true
		close(c.done)
		c.page = nil
	}
	c.mu.Unlock()
	var errs []error
	if page != nil {
		errs = append(errs, page.shutdown(ctx))
	}
	// Every process but the brokers is asked to stop at once, in reverse
	// order of start (the load balancer first), and then awaited: a
	// service answers its held ?wait= requests as it stops, which lets the
	// balancer and gateways in front of it finish draining. The brokers
	// stop last, once nothing publishes any more.
	stopAll := func(procs []*Process) {
		var asked []*Process
		for i := len(procs) - 1; i >= 0; i-- {
			running, err := terminate(procs[i])
			errs = append(errs, err)
			if running && err == nil {
				asked = append(asked, procs[i])
			}
		}
		// Each process gets its own grace from now: they drain together.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
		defer cancel()
		for _, p := range asked {
			errs = append(errs, await(pctx, p))
		}
	}
	var brokers, others []*Process
	for _, p := range c.procs {
		if p.Role == "broker" {
			brokers = append(brokers, p)
		} else {
			others = append(others, p)
		}
	}
	stopAll(others)
	stopAll(brokers)
	c.wg.Wait()
	if c.lock != nil {
		errs = append(errs, c.lock.Release())
		c.lock = nil
	}
	return errors.Join(errs...)
}

// secret returns the secret kept at path, or makes and keeps a new one, so
// that a restart keeps the same credentials.
func secret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	s := rand.Text()
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep secret: %w", err)
	}
	return s, nil
}

func checkFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("load balancer: listen on %s: %w", addr, err)
	}
	return ln.Close()
}

// freePorts finds n free ports on loopback for the processes to listen on,
// none of them in given, and adds them to it: a port found free stays free
// only until its process binds it, so one start must not hand it out
// twice. They are drawn below the kernel's ephemeral range: a port the
// kernel hands out (":0") is also one it gives outgoing connections, and
// in the seconds between finding it and the process binding it, a
// connection to PostgreSQL or NATS could take it ("address already in
// use").
func freePorts(given map[int]bool, n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	low, high := listenRange()
	// From a random point of the range on, every port in turn: clusters
	// started at once rarely meet, and a free port is found if there is one.
	start := mathrand.IntN(high - low)
	var ports []int
	for i := 0; i < high-low && len(ports) < n; i++ {
		port := low + (start+i)%(high-low)
		if given[port] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		lns = append(lns, ln)
		ports = append(ports, port)
		given[port] = true
	}
	if len(ports) < n {
		return nil, fmt.Errorf("find a free port: %d of %d found in %d-%d", len(ports), n, low, high)
	}
	return ports, nil
}

// lastLine is the last line of a process's log: the error it exited with.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// FreeAddr is a free loopback address drawn as freePorts draws them, for a
// cluster's load balancer when the caller has none in mind (tests).
func FreeAddr() (string, error) {
	ports, err := freePorts(map[int]bool{}, 1)
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(ports[0]), nil
}

// listenRange is the range freePorts draws from: the 10,000 ports below the
// ephemeral range of Linux (/proc/sys/net/ipv4/ip_local_port_range,
// 32768-60999 by default).
func listenRange() (low, high int) {
	high = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11024 {
				high = v
			}
		}
	}
	return high - 10000, high
}

func tcpUp(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func httpReady(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz answered %s", resp.Status)
	}
	return nil
}
