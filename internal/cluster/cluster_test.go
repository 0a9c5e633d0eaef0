package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
	"github.com/convergehq/converge/internal/check"
	"github.com/convergehq/converge/internal/cluster"
	"github.com/convergehq/converge/internal/cluster/clustertest"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/metrics/metricstest"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
	"github.com/convergehq/converge/internal/telemetry/telemetrytest"
)

const (
	apiKey   = "cluster-test-key"
	adminKey = "cluster-test-admin-key"
)

// budget bounds the waits of one step of the test together, so that a
// stuck flow fails in seconds and names what is stuck.
const budget = 90 * time.Second

type env struct {
	t        *testing.T
	c        *cluster.Cluster
	orderDB  string
	invDB    string
	http     *http.Client
	deadline time.Time
}

// startCluster starts the cluster; extra is added to every process's
// environment.
func startCluster(t *testing.T, extra ...string) *env {
	t.Helper()
	storetest.RequirePostgres(t)
	redisURL := redistest.URL(t)
	bin := clustertest.Binary(t)
	e := &env{
		t:       t,
		orderDB: storetest.URL(t, store.Postgres, "orders"),
		invDB:   storetest.URL(t, store.Postgres, "inventory"),
		http:    &http.Client{Timeout: 40 * time.Second},
	}
	addr, err := cluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.c, err = cluster.Start(ctx, cluster.Config{
		Binary: bin, DataDir: t.TempDir(), Addr: addr, APIKey: apiKey, AdminKey: adminKey,
		OrderDB: e.orderDB, InventoryDB: e.invDB, Cache: redisURL,
		CachePrefix: redistest.Prefix(t, redisURL), BrokerSync: true, Env: append(clustertest.Env(), extra...),
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.c.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			for _, p := range e.c.Processes() {
				if b, err := os.ReadFile(p.Log); err == nil {
					t.Logf("=== %s log (warnings and errors, last 6000 bytes)\n%s", p.Name, tail(warnings(b), 6000))
				}
			}
		}
	})
	e.deadline = time.Now().Add(budget)
	return e
}

// warnings keeps the lines of a log at WARN and ERROR.
func warnings(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(line, []byte("level=WARN")) || bytes.Contains(line, []byte("level=ERROR")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (e *env) do(method, path string, body any) (int, []byte, error) {
	return e.doAs(apiKey, method, path, body)
}

// doAs sends a request with key as the bearer token.
func (e *env) doAs(key, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.c.LBURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

type orderView struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

func (e *env) place(sku string, qty int) (orderView, error) {
	status, body, err := e.do("POST", "/api/v1/orders", map[string]any{"customer_id": "c", "items": []map[string]any{{"sku": sku, "quantity": qty}}})
	if err != nil {
		return orderView{}, err
	}
	if status != http.StatusAccepted {
		return orderView{}, fmt.Errorf("POST order: status %d: %s", status, body)
	}
	var o orderView
	return o, json.Unmarshal(body, &o)
}

func (e *env) setStock(sku string, onHand int) {
	e.t.Helper()
	status, body, err := e.do("PUT", "/api/v1/inventory/"+sku, map[string]int{"on_hand": onHand})
	if err != nil || status != http.StatusOK {
		e.t.Fatalf("PUT stock %s: %d %s %v", sku, status, body, err)
	}
}

// wait starts a new budget for the waits of one step.
func (e *env) wait() { e.deadline = time.Now().Add(budget) }

// finals waits, within the test's budget, until every order has left
// PENDING, and names the ones that did not.
func (e *env) finals(ids []string) map[string]orderView {
	e.t.Helper()
	out := make(map[string]orderView, len(ids))
	for _, id := range ids {
		for time.Now().Before(e.deadline) {
			status, body, err := e.do("GET", "/api/v1/orders/"+id+"?wait=5s", nil)
			if err != nil || status != http.StatusOK {
				time.Sleep(100 * time.Millisecond) // an instance may be restarting
				continue
			}
			var o orderView
			if err := json.Unmarshal(body, &o); err != nil {
				e.t.Fatal(err)
			}
			out[id] = o
			if o.Status != "PENDING" {
				break
			}
		}
	}
	var stuck []string
	for _, id := range ids {
		if out[id].Status == "" || out[id].Status == "PENDING" {
			stuck = append(stuck, id)
		}
	}
	if len(stuck) > 0 {
		e.t.Fatalf("%d of %d orders not final within the test's %s: %s", len(stuck), len(ids), budget, strings.Join(stuck, " "))
	}
	return out
}

// checkInvariants runs the checker against both PostgreSQL databases until
// every invariant holds or the budget is spent.
func (e *env) checkInvariants() {
	e.t.Helper()
	ctx := context.Background()
	orders, inv := storetest.OpenURL(e.t, e.orderDB), storetest.OpenURL(e.t, e.invDB)
	var results []check.Result
	for {
		var err error
		results, err = check.Run(ctx, orders, inv)
		if err != nil {
			e.t.Fatal(err)
		}
		ok := true
		for _, r := range results {
			ok = ok && r.OK
		}
		if ok {
			return
		}
		if time.Now().After(e.deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range results {
		if !r.OK {
			e.t.Errorf("invariant failed: %s: %s", r.Name, r.Detail)
		}
	}
}

func (e *env) reserved(sku string) (onHand, reserved int) {
	e.t.Helper()
	status, body, err := e.do("GET", "/api/v1/inventory/"+sku, nil)
	if err != nil || status != http.StatusOK {
		e.t.Fatalf("GET stock %s: %d %s %v", sku, status, body, err)
	}
	var s struct {
		OnHand   int `json:"on_hand"`
		Reserved int `json:"reserved"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		e.t.Fatal(err)
	}
	return s.OnHand, s.Reserved
}

// jetStream connects to the brokers with the services' credentials until
// the test ends.
func (e *env) jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(e.c.NATSURL, nats.UserInfo(e.c.NATSUser, e.c.NATSPassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// The production topology in miniature: 3 brokers (R3), 2 instances of
// each service on PostgreSQL and Redis, 2 gateways, the load balancer,
// each its own process.
func TestCluster(t *testing.T) {
	// Every process exports its spans to the test, but samples only what
	// a sampled caller started: the test's traced orders, not the load.
	spans := telemetrytest.NewReceiver(t)
	e := startCluster(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+spans.URL, "OTEL_TRACES_SAMPLER=parentbased_always_off", "OTEL_BSP_SCHEDULE_DELAY=100")

	t.Run("one trace per order across the processes", func(t *testing.T) {
		testTraces(t, e, spans)
	})

	t.Run("streams are replicated", func(t *testing.T) {
		js := e.jetStream(t)
		for _, name := range []string{events.OrdersStream, events.InventoryStream, events.DeadLetterStream} {
			s, err := js.Stream(context.Background(), name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			if r := s.CachedInfo().Config.Replicas; r != 3 {
				t.Errorf("stream %s has %d replicas, want 3", name, r)
			}
		}
		if _, err := nats.Connect(e.c.NATSURL); err == nil {
			t.Error("a client without credentials was let in")
		}
	})

	// The admin API reaches the dead letters through the load balancer,
	// the gateways and an order instance, with the admin key only.
	t.Run("dead letters through the admin API", func(t *testing.T) {
		js := e.jetStream(t)
		if _, err := js.Publish(context.Background(), "orders.created", []byte("not an event"), jetstream.WithMsgID("cluster-poison")); err != nil {
			t.Fatal(err)
		}
		var page struct {
			Items []struct {
				Seq      uint64 `json:"seq"`
				Consumer string `json:"consumer"`
				MsgID    string `json:"msg_id"`
			} `json:"items"`
		}
		until := time.Now().Add(budget)
		for len(page.Items) == 0 {
			status, body, err := e.doAs(adminKey, "GET", "/api/v1/admin/dead-letters?consumer=inventory", nil)
			if err != nil || status != http.StatusOK {
				t.Fatalf("list dead letters: %d %s %v", status, body, err)
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(until) {
				t.Fatal("the poison message was not dead-lettered")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if l := page.Items[0]; len(page.Items) != 1 || l.MsgID != "cluster-poison" {
			t.Fatalf("dead letters: %+v", page.Items)
		}
		path := fmt.Sprintf("/api/v1/admin/dead-letters/%d", page.Items[0].Seq)
		if status, body, _ := e.do("DELETE", path, nil); status != http.StatusForbidden {
			t.Errorf("discard with the API key: %d %s, want 403", status, body)
		}
		if status, body, err := e.doAs(adminKey, "DELETE", path, nil); err != nil || status != http.StatusNoContent {
			t.Errorf("discard: %d %s %v", status, body, err)
		}
	})

	// 1,000 orders race for 100 units while 300 of them are cancelled:
	// nothing is oversold, nothing leaks, and the checker agrees.
	t.Run("orders and cancels race on two instances", func(t *testing.T) {
		e.setStock("HOT", 100)
		const n, cancels = 1000, 300
		ids := make([]string, n)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		sem := make(chan struct{}, 32)
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				o, err := e.place("HOT", 1)
				if err == nil && i < cancels {
					var status int
					status, _, err = e.do("POST", "/api/v1/orders/"+o.ID+"/cancel", nil)
					if err == nil && status != http.StatusAccepted && status != http.StatusConflict {
						err = fmt.Errorf("cancel %s: status %d", o.ID, status)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				ids[i] = o.ID
			})
		}
		wg.Wait()
		for _, err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		e.wait()
		final := e.finals(ids)
		confirmed := 0
		for _, id := range ids {
			if final[id].Status == "CONFIRMED" {
				confirmed++
			}
		}
		e.checkInvariants()
		onHand, reserved := e.reserved("HOT")
		if reserved != confirmed || reserved > onHand {
			t.Errorf("HOT: on_hand %d reserved %d with %d orders CONFIRMED; want reserved = confirmed <= on_hand", onHand, reserved, confirmed)
		}
	})

	// Each order instance counts what it did; together they count every
	// order placed so far (the race's and the traced ones) once, and each
	// broker node serves its own figures.
	t.Run("metrics add up across instances", func(t *testing.T) {
		var placed, final, orders float64
		scrape := func(last bool) {
			placed, final, orders = 0, 0, 0
			for _, name := range []string{"order-1", "order-2"} {
				f := metricstest.Scrape(t, e.c.Process(name).Metrics)
				placed += f.Sum("converge_http_request_duration_seconds_count", "route", "POST /api/v1/orders", "status", "202")
				final += f.Sum("converge_order_final_seconds_count")
				if last && (f.Series("converge_db_transaction_duration_seconds", "engine", "postgres") == 0 || f.Series("converge_cache_lookups_total", "cache", "redis") == 0) {
					t.Errorf("%s: no transactions on postgres or no lookups of the redis cache", name)
				}
				if name == "order-1" {
					orders = f.Sum("converge_orders") // one database: every instance counts the same
				}
			}
		}
		// An instance counts an order final just after its commit, which
		// the other instance may see first: a moment to settle.
		e.wait()
		for ; ; time.Sleep(50 * time.Millisecond) {
			scrape(false)
			if (placed == final && placed == orders) || time.Now().After(e.deadline) {
				break
			}
		}
		scrape(true)
		if placed < 1000 || placed != final || placed != orders {
			t.Errorf("order instances: %v placed, %v reached a final status, %v orders in DB A; want the same count, at least the race's 1000", placed, final, orders)
		}
		lb := metricstest.Scrape(t, e.c.Process("lb").Metrics)
		if got := lb.Sum("converge_backend_up", "pool", "gateway"); got != 2 {
			t.Errorf("load balancer: %v gateways up, want 2", got)
		}
		for _, p := range e.c.Processes() {
			if p.Role != "broker" {
				continue
			}
			f := metricstest.Scrape(t, p.Metrics)
			if f.Sum("converge_broker_up") != 1 || f.Sum("converge_broker_streams") != 3 {
				t.Errorf("%s: up %v with %v streams, want 1 with 3", p.Name, f.Sum("converge_broker_up"), f.Sum("converge_broker_streams"))
			}
		}
	})

	// kill -9 of an order instance, an inventory instance and the broker
	// that leads the ORDERS stream, while orders flow: every accepted order
	// reaches a final state, and nothing is applied twice.
	t.Run("kill -9 mid-load", func(t *testing.T) {
		e.setStock("KILL", 100000)
		var (
			wg  sync.WaitGroup
			mu  sync.Mutex
			ids []string
		)
		stop := make(chan struct{})
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					o, err := e.place("KILL", 1)
					if err != nil {
						continue // refused while an instance died: not accepted, nothing owed
					}
					mu.Lock()
					ids = append(ids, o.ID)
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Second)
		leader := streamLeader(t, e)
		for _, name := range []string{"order-2", "inventory-2", leader} {
			if err := e.c.Signal(name, syscall.SIGKILL); err != nil {
				t.Fatalf("kill %s: %v", name, err)
			}
			time.Sleep(time.Second)
		}
		close(stop)
		wg.Wait()
		e.wait()
		for _, name := range []string{leader, "inventory-2", "order-2"} {
			waitExited(t, e, name)
			if err := e.c.Restart(name); err != nil {
				t.Fatalf("restart %s: %v", name, err)
			}
		}
		t.Logf("%d orders accepted around the kills of order-2, inventory-2 and %s", len(ids), leader)
		e.wait()
		e.finals(ids)
		e.checkInvariants()
	})
}

func waitExited(t *testing.T, e *env, name string) {
	t.Helper()
	for e.c.Process(name).Running() {
		if time.Now().After(e.deadline) {
			t.Fatalf("%s did not exit after SIGKILL", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamLeader names the broker process that leads the ORDERS stream.
func streamLeader(t *testing.T, e *env) string {
	t.Helper()
	nc, err := nats.Connect(e.c.NATSURL, nats.UserInfo(e.c.NATSUser, e.c.NATSPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), events.OrdersStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatal("the ORDERS stream has no leader")
	}
	return info.Cluster.Leader
}

func TestMain(m *testing.M) {
	code := m.Run()
	clustertest.Cleanup()
	os.Exit(code)
}
