package system_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
	"github.com/convergehq/converge/internal/cluster"
	"github.com/convergehq/converge/internal/cluster/clustertest"
	"github.com/convergehq/converge/internal/metrics/metricstest"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
	"github.com/convergehq/converge/internal/system"
)

// TopologyEnv chooses the topology the end-to-end suite runs against:
// "embedded" (the default: one process, SQLite, the embedded broker) or
// "cluster" (every role its own process, PostgreSQL, Redis, 3 brokers with
// R3 streams, 2 instances of each service and 2 gateways). The tests are
// the same; only the deployment under them changes.
const TopologyEnv = "CONVERGE_TEST_TOPOLOGY"

func TestMain(m *testing.M) {
	code := m.Run()
	clustertest.Cleanup()
	os.Exit(code)
}

func clusterTopology(t testing.TB) bool {
	t.Helper()
	switch v := os.Getenv(TopologyEnv); v {
	case "", "embedded":
		return false
	case "cluster":
		return true
	default:
		t.Fatalf("%s=%q: want embedded or cluster", TopologyEnv, v)
		return false
	}
}

// deployment is a running converge as the end-to-end tests see it. The
// tests reach it through the load balancer like a user, and break it
// through these methods like an operator or a crash would.
type deployment interface {
	// URL is the load balancer's base URL.
	URL() string
	// PageURL is the base URL of the live page (/ui/) with every part and
	// the stop and start buttons: the load balancer's in the embedded
	// topology, the one dev's own process serves (--ui-addr) in the
	// cluster. Either forwards /api/ to the load balancer.
	PageURL() string
	// Gateways lists the gateways' base URLs, in the load balancer's order.
	Gateways() []string
	// InRotation lists the gateways the load balancer sends requests to now.
	InRotation() ([]string, error)
	// KillGateway crashes gateway i, dropping its connections.
	KillGateway(i int) error
	// StopBroker stops every broker node; the services keep accepting
	// orders into their outboxes. StartBroker brings them back.
	StopBroker() error
	StartBroker() error
	// Instances lists the base URLs of a service's instances ("order",
	// "inventory"); BrokerEndpoints those of the broker nodes' metrics
	// and health endpoints.
	Instances(service string) []string
	BrokerEndpoints() []string
	// Broker connects a client of the test's own to the broker.
	Broker(ctx context.Context, name string) (*broker.Conn, error)
	// Databases opens the two services' databases.
	Databases(ctx context.Context) (orders, inventory *store.DB, err error)
	// PublishAhead publishes m, while the broker is stopped, so that it
	// reaches the stream before anything the relays still hold; the
	// broker is stopped again, or the relays held back, until StartBroker.
	PublishAhead(t testing.TB, m broker.Message)
	Shutdown(ctx context.Context) error
}

// start runs converge on free ports in a temporary data directory and
// shuts it down when the test ends.
func start(t testing.TB) deployment {
	t.Helper()
	return startIn(t, t.TempDir())
}

func startIn(t testing.TB, dir string) deployment {
	t.Helper()
	d, err := startFor(t, dir)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { stop(t, d) })
	return d
}

// startFor starts converge on dir, in the topology the suite runs against;
// the test stops it itself. Starting again on the same dir (in the same
// test) finds the same data.
func startFor(t testing.TB, dir string) (deployment, error) {
	t.Helper()
	return startWith(t, dir, retry{})
}

// retry is a consumers' retry schedule; zero takes the defaults (10
// deliveries over about two minutes).
type retry struct {
	maxDeliver int
	backoff    []time.Duration
}

// startWith is startFor with the consumers' retry schedule r.
func startWith(t testing.TB, dir string, r retry) (deployment, error) {
	t.Helper()
	if clusterTopology(t) {
		return startCluster(t, dir, r)
	}
	cfg := testConfig(dir)
	if r.maxDeliver > 0 {
		cfg = system.WithRetry(cfg, r.maxDeliver, r.backoff...)
	}
	sys, err := system.Start(context.Background(), cfg, brokertest.Logger(t))
	if err != nil {
		return nil, err
	}
	return &embedded{sys: sys, dir: dir, log: brokertest.Logger(t)}, nil
}

// startEmbedded starts the embedded topology with cfg, whatever the suite
// runs against: for tests that look inside the process (its spans, its
// logs). The cluster's are looked at by internal/cluster's tests.
func startEmbedded(t testing.TB, cfg system.Config, log *slog.Logger) deployment {
	t.Helper()
	if clusterTopology(t) {
		t.Skip("looks inside the embedded system's process; internal/cluster's tests do the same for the processes of the cluster")
	}
	sys, err := system.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	d := &embedded{sys: sys, dir: cfg.DataDir, log: log}
	t.Cleanup(func() { stop(t, d) }) // Shutdown may run twice
	return d
}

func stop(t testing.TB, d deployment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func testConfig(dir string) system.Config {
	cfg := system.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.APIKey = testKey
	cfg.AdminKey = testAdminKey
	cfg.Seed = false
	cfg.BrokerPort = 0
	return cfg
}

// embedded is the default topology, in this process.
type embedded struct {
	sys *system.System
	dir string
	log *slog.Logger
}

func (e *embedded) URL() string                   { return e.sys.LBURL }
func (e *embedded) PageURL() string               { return e.sys.LBURL }
func (e *embedded) Gateways() []string            { return e.sys.GatewayURLs }
func (e *embedded) InRotation() ([]string, error) { return e.sys.InRotation(), nil }
func (e *embedded) KillGateway(i int) error       { return e.sys.KillGateway(i) }
func (e *embedded) StopBroker() error             { e.sys.StopBroker(); return nil }
func (e *embedded) StartBroker() error            { return e.sys.StartBroker() }
func (e *embedded) BrokerEndpoints() []string     { return []string{e.sys.BrokerMetricsURL} }

func (e *embedded) Instances(service string) []string {
	switch service {
	case "order":
		return []string{e.sys.OrderURL}
	case "inventory":
		return []string{e.sys.InventoryURL}
	}
	return nil
}

func (e *embedded) Shutdown(ctx context.Context) error {
	return e.sys.Shutdown(ctx)
}

func (e *embedded) Broker(ctx context.Context, name string) (*broker.Conn, error) {
	return broker.Connect(ctx, e.sys.BrokerURL, name, e.log)
}

func (e *embedded) Databases(ctx context.Context) (*store.DB, *store.DB, error) {
	return e.sys.OpenDatabases(ctx)
}

// PublishAhead starts a second broker on the system's store, on a port the
// services do not know, publishes m there and stops it again.
func (e *embedded) PublishAhead(t testing.TB, m broker.Message) {
	t.Helper()
	ctx := context.Background()
	srv, err := broker.StartServer(broker.ServerConfig{Dir: filepath.Join(e.dir, "broker")}, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("start a broker on the system's store: %v", err)
	}
	defer srv.Shutdown()
	conn, err := broker.Connect(ctx, srv.ClientURL(), "ahead", brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.PublishBatch(ctx, []broker.Message{m}); err != nil {
		t.Fatalf("publish %s: %v", m.ID, err)
	}
}

// clustered is the production topology in miniature: every role a process
// of the converge binary, on PostgreSQL and Redis.
type clustered struct {
	c                *cluster.Cluster
	orderDB, invDB   string
	brokers, orders  []string // process names
	gateways, gwURLs []string
	http             *http.Client
	log              *slog.Logger
}

// clusterData is what two starts on one data directory share besides the
// directory: its databases and cache prefix.
var clusterData = struct {
	sync.Mutex
	m map[string][3]string
}{m: map[string][3]string{}}

func startCluster(t testing.TB, dir string, r retry) (*clustered, error) {
	t.Helper()
	storetest.RequirePostgres(t)
	redisURL := redistest.URL(t)
	clusterData.Lock()
	data, ok := clusterData.m[dir]
	if !ok {
		data = [3]string{storetest.URL(t, store.Postgres, "orders"), storetest.URL(t, store.Postgres, "inventory"), redistest.Prefix(t, redisURL)}
		clusterData.m[dir] = data
		t.Cleanup(func() {
			clusterData.Lock()
			defer clusterData.Unlock()
			delete(clusterData.m, dir)
		})
	}
	clusterData.Unlock()
	bin := clustertest.Binary(t)

	addr, err := cluster.FreeAddr()
	if err != nil {
		return nil, err
	}
	env := clustertest.Env()
	if r.maxDeliver > 0 {
		backoff := make([]string, len(r.backoff))
		for i, b := range r.backoff {
			backoff[i] = b.String()
		}
		env = append(env, fmt.Sprintf("CONVERGE_MAX_DELIVER=%d", r.maxDeliver), "CONVERGE_RETRY_BACKOFF="+strings.Join(backoff, ","))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Config{
		Binary: bin, DataDir: dir, Addr: addr, APIKey: testKey, AdminKey: testAdminKey,
		OrderDB: data[0], InventoryDB: data[1], Cache: redisURL, CachePrefix: data[2],
		BrokerSync: true, Env: env, UIAddr: "127.0.0.1:0",
	}, brokertest.Logger(t))
	if err != nil {
		return nil, err
	}
	d := &clustered{c: c, orderDB: data[0], invDB: data[1], http: &http.Client{Timeout: 5 * time.Second}, log: brokertest.Logger(t)}
	for _, p := range c.Processes() {
		switch p.Role {
		case "broker":
			d.brokers = append(d.brokers, p.Name)
		case "order":
			d.orders = append(d.orders, p.Name)
		case "gateway":
			d.gateways = append(d.gateways, p.Name)
			d.gwURLs = append(d.gwURLs, "http://"+p.Addr)
		}
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep := os.Getenv("CONVERGE_TEST_KEEP_LOGS") // a directory for every line of every log
		for _, p := range c.Processes() {
			b, err := os.ReadFile(p.Log)
			if err != nil {
				continue
			}
			t.Logf("=== %s log (warnings and errors, last 4000 bytes)\n%s", p.Name, lastBytes(warnings(b), 4000))
			if keep != "" {
				path := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+"-"+p.Name+".log")
				if err := os.MkdirAll(keep, 0o755); err == nil && os.WriteFile(path, b, 0o644) == nil {
					t.Logf("kept %s", path)
				}
			}
		}
	})
	return d, nil
}

func (d *clustered) Instances(service string) []string {
	var out []string
	for _, p := range d.c.Processes() {
		if p.Role == service {
			out = append(out, "http://"+p.Addr)
		}
	}
	return out
}

func (d *clustered) BrokerEndpoints() []string {
	var out []string
	for _, p := range d.c.Processes() {
		if p.Role == "broker" {
			out = append(out, strings.TrimSuffix(p.Metrics, "/metrics"))
		}
	}
	return out
}

func (d *clustered) URL() string                        { return d.c.LBURL }
func (d *clustered) PageURL() string                    { return d.c.UIURL }
func (d *clustered) Gateways() []string                 { return d.gwURLs }
func (d *clustered) Shutdown(ctx context.Context) error { return d.c.Shutdown(ctx) }

func (d *clustered) KillGateway(i int) error {
	return d.c.Signal(d.gateways[i], syscall.SIGKILL)
}

// InRotation reads the load balancer's backend_up gauges from its metrics.
func (d *clustered) InRotation() ([]string, error) {
	resp, err := d.http.Get(d.c.LBURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics of the load balancer: %s", resp.Status)
	}
	up := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "converge_backend_up{") {
			continue
		}
		for _, u := range d.gwURLs {
			if strings.Contains(line, `backend="`+u+`"`) && strings.HasSuffix(line, " 1") {
				up[u] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []string
	for _, u := range d.gwURLs {
		if up[u] {
			out = append(out, u)
		}
	}
	return out, nil
}

// StopBroker stops every broker node at once.
func (d *clustered) StopBroker() error { return d.each(d.brokers, d.stopProcess) }

// StartBroker starts every broker node that is stopped, and every order
// instance PublishAhead held back. It returns once every gateway has every
// order instance in rotation again, as the embedded system leaves them
// (its order service never stops).
func (d *clustered) StartBroker() error {
	if err := errors.Join(d.each(d.brokers, d.restart), d.each(d.orders, d.restart)); err != nil {
		return err
	}
	return d.awaitOrdersInRotation(time.Minute)
}

// awaitOrdersInRotation waits until each gateway counts every order
// instance up, reading the gateways' backend_up gauges.
func (d *clustered) awaitOrdersInRotation(limit time.Duration) error {
	end := time.Now().Add(limit)
	for {
		var short []string
		for _, gw := range d.gateways {
			f, err := metricstest.TryScrape(d.c.Process(gw).Metrics)
			if up := f.Sum("converge_backend_up", "pool", "order"); err != nil || up != float64(len(d.orders)) {
				short = append(short, fmt.Sprintf("%s: %v of %d up (%v)", gw, up, len(d.orders), err))
			}
		}
		if len(short) == 0 {
			return nil
		}
		if time.Now().After(end) {
			var exited []string
			for _, name := range d.orders {
				if !d.c.Process(name).Running() {
					exited = append(exited, name)
				}
			}
			return fmt.Errorf("order instances not back in rotation after %s: %s; not running: %v", limit, strings.Join(short, "; "), exited)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *clustered) stopProcess(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.c.Stop(ctx, name)
}

func (d *clustered) restart(name string) error {
	if p := d.c.Process(name); p.Running() {
		return nil
	}
	return d.c.Restart(name)
}

func (d *clustered) each(names []string, fn func(string) error) error {
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { errs[i] = fn(n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (d *clustered) Broker(ctx context.Context, name string) (*broker.Conn, error) {
	urls, err := broker.ParseURLs(d.c.NATSURL)
	if err != nil {
		return nil, err
	}
	return broker.Dial(ctx, broker.ClientConfig{URLs: urls, Name: name, User: d.c.NATSUser, Password: d.c.NATSPassword}, d.log)
}

func (d *clustered) Databases(ctx context.Context) (*store.DB, *store.DB, error) {
	orders, err := store.Open(ctx, d.orderDB)
	if err != nil {
		return nil, nil, err
	}
	inv, err := store.Open(ctx, d.invDB)
	if err != nil {
		orders.Close()
		return nil, nil, err
	}
	return orders, inv, nil
}

// PublishAhead holds the relays back by stopping every order instance,
// brings the brokers back, and publishes m; StartBroker starts the order
// instances again, whose relays then publish what they hold after m.
func (d *clustered) PublishAhead(t testing.TB, m broker.Message) {
	t.Helper()
	if err := d.each(d.orders, d.stopProcess); err != nil {
		t.Fatalf("stop the order instances: %v", err)
	}
	if err := d.each(d.brokers, d.restart); err != nil {
		t.Fatalf("start the brokers: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := d.Broker(ctx, "ahead")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The brokers elect the stream's leader after a restart; publish until
	// one takes it.
	for {
		err := conn.PublishBatch(ctx, []broker.Message{m})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish %s: %v", m.ID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// warnings keeps the lines of a log at WARN and ERROR, and the lines a
// process prints outside its logger (the error it exits with).
func warnings(b []byte) string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			(line != "" && !strings.HasPrefix(line, "time=")) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitForRotation waits up to d, and no longer than the test's shared
// deadline, until the load balancer has exactly want in rotation.
func waitForRotation(t testing.TB, dep deployment, d time.Duration, want ...string) {
	t.Helper()
	until := waitEnd(t, d)
	for {
		got, err := dep.InRotation()
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(until) {
			t.Fatalf("gateways in rotation after %s: got %v (%v), want %v", d, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
