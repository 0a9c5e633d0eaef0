package system_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/metrics/metricstest"
)

// httpCount is the number of requests a role's HTTP histogram counted.
const httpCount = "converge_http_request_duration_seconds_count"

// Under load every role's /metrics moves: requests by route and status at
// each hop, relay publishes, the order -> final histogram, orders by
// status, cache lookups, the backends in rotation, the consumers and the
// dead-letter depth as the broker reports them.
func TestMetricsMoveUnderLoad(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 20)

	// One poison message, dead-lettered by inventory's consumer.
	ctx := context.Background()
	conn, err := sys.Broker(ctx, "poisoner")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.PublishBatch(ctx, []broker.Message{{ID: "poison-1", Subject: "orders.created", Data: []byte("not an event")}}); err != nil {
		t.Fatal(err)
	}

	const n = 30
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i] = c.place(fmt.Sprintf("c-%d", i), item{"A-1", 1}).ID })
	}
	wg.Wait()
	count := map[string]int{}
	for _, o := range c.finals(ids...) {
		count[o.Status]++
	}
	if count["CONFIRMED"] != 20 || count["REJECTED"] != 10 {
		t.Fatalf("orders: %v, want 20 CONFIRMED and 10 REJECTED", count)
	}
	// Read twice more: the first read fills the cache (a long poll that a
	// commit answered did not read the order), the second finds it there.
	c.final(ids[0])
	c.final(ids[0])

	// Some figures settle after the orders are final: a relay marks its
	// batch published (and counts it) only after the broker's ack, which
	// may be after the consumer applied the events; the broker takes the
	// consumers' acks from a queue; another instance may see an order
	// final before the committing one has counted it. Wait for them, then
	// let the checks below say what did not settle.
	ordURLs, invURLs := metricsURLs(sys.Instances("order")), metricsURLs(sys.Instances("inventory"))
	settled := func() bool {
		ordAll, invAll := metricstest.ScrapeAll(t, ordURLs...), metricstest.ScrapeAll(t, invURLs...)
		ord1, inv1 := metricstest.Scrape(t, ordURLs[0]), metricstest.Scrape(t, invURLs[0])
		return ordAll.Sum("converge_relay_published_events_total") == n &&
			invAll.Sum("converge_relay_published_events_total") == n &&
			ordAll.Sum("converge_order_final_seconds_count") == n &&
			ord1.Sum("converge_outbox_backlog_events") == 0 &&
			inv1.Sum("converge_outbox_backlog_events") == 0 &&
			inv1.Sum("converge_consumer_ack_pending_messages", "consumer", "inventory") == 0
	}
	settle(t, 10*time.Second, settled)

	lb := metricstest.Scrape(t, sys.URL()+"/metrics")
	if got := lb.Sum(httpCount, "route", "proxy", "method", "POST", "status", "202"); got != n {
		t.Errorf("load balancer: %v POSTs answered 202, want %d", got, n)
	}
	if got := lb.Sum("converge_backend_up", "pool", "gateway"); got != float64(len(sys.Gateways())) {
		t.Errorf("load balancer: %v gateways up, want %d", got, len(sys.Gateways()))
	}

	var placed, ordersUp float64
	for _, gw := range sys.Gateways() {
		f := metricstest.Scrape(t, gw+"/metrics")
		placed += f.Sum(httpCount, "route", "/api/v1/orders", "method", "POST", "status", "202")
		ordersUp += f.Sum("converge_backend_up", "pool", "order")
	}
	// Every gateway balances over every order instance.
	if want := len(sys.Gateways()) * len(sys.Instances("order")); placed != n || ordersUp != float64(want) {
		t.Errorf("gateways: %v POSTs answered 202, %v order instances up over all gateways; want %d and %d", placed, ordersUp, n, want)
	}

	// Counters add up over the instances; gauges of the shared database
	// and of the broker are the same on every instance, so one is read.
	ord := metricstest.ScrapeAll(t, ordURLs...)
	ord1 := metricstest.Scrape(t, ordURLs[0])
	for _, w := range []struct {
		name  string
		match []string
		want  float64
	}{
		{httpCount, []string{"route", "POST /api/v1/orders", "status", "202"}, n},
		{"converge_order_final_seconds_count", []string{"status", "CONFIRMED"}, 20},
		{"converge_order_final_seconds_count", []string{"status", "REJECTED"}, 10},
		{"converge_relay_published_events_total", nil, n},
		{"converge_relay_batch_events_sum", nil, n},
		{"converge_db_transaction_errors_total", []string{"db", "order"}, 0},
	} {
		if got := ord.Sum(w.name, w.match...); got != w.want {
			t.Errorf("order service: %s%v = %v, want %v", w.name, w.match, got, w.want)
		}
	}
	for _, w := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"converge_orders", []string{"status", "CONFIRMED"}, 20},
		{"converge_orders", []string{"status", "REJECTED"}, 10},
		{"converge_orders", []string{"status", "PENDING"}, 0},
		{"converge_outbox_backlog_events", nil, 0},
		{"converge_deadletter_messages", []string{"consumer", "order"}, 0},
	} {
		if got := ord1.Sum(w.name, w.match...); got != w.want {
			t.Errorf("order instance: %s%v = %v, want %v", w.name, w.match, got, w.want)
		}
	}
	for _, name := range []string{"converge_db_transaction_duration_seconds_count", "converge_cache_lookups_total"} {
		if got := ord.Sum(name); got == 0 {
			t.Errorf("order service: %s = 0, want some", name)
		}
	}
	if got := ord.Sum("converge_cache_lookups_total", "result", "hit"); got == 0 {
		t.Errorf("order service: no cache hit")
	}
	if got := ord1.Series("converge_consumer_pending_messages", "consumer", "order"); got != 1 {
		t.Errorf("order service: %d series of the consumer's pending messages, want 1", got)
	}

	inv := metricstest.Scrape(t, invURLs[0])
	// Inventory's consumer took the 30 orders and the poison, and has
	// acknowledged them all; its replies went out through its relay.
	if got := metricstest.ScrapeAll(t, invURLs...).Sum("converge_relay_published_events_total"); got != n {
		t.Errorf("inventory service: converge_relay_published_events_total = %v, want %v", got, n)
	}
	for _, w := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"converge_deadletter_messages", []string{"consumer", "inventory"}, 1},
		{"converge_consumer_pending_messages", []string{"consumer", "inventory"}, 0},
		{"converge_consumer_ack_pending_messages", []string{"consumer", "inventory"}, 0},
		{"converge_outbox_backlog_events", nil, 0},
	} {
		if got := inv.Sum(w.name, w.match...); got != w.want {
			t.Errorf("inventory service: %s%v = %v, want %v", w.name, w.match, got, w.want)
		}
	}

	br := metricstest.Scrape(t, sys.BrokerEndpoints()[0]+"/metrics")
	if br.Sum("converge_broker_up") != 1 || br.Sum("converge_broker_received_messages_total") == 0 || br.Sum("converge_broker_streams") != 3 {
		t.Errorf("broker: up %v, received %v messages, %v streams; want 1, some, 3",
			br.Sum("converge_broker_up"), br.Sum("converge_broker_received_messages_total"), br.Sum("converge_broker_streams"))
	}
	for role, f := range map[string]metricstest.Figures{"lb": lb, "order": ord1, "inventory": inv, "broker": br} {
		if !f.Has("process_cpu_seconds_total") || !f.Has("go_goroutines") || f.Series("go_goroutines", "role", role) != 1 {
			t.Errorf("%s: no process or Go runtime metrics labelled role=%q", role, role)
		}
	}
}

// While the broker is away the order service's outbox fills and its relay
// fails; the broker's own endpoint says it is down. Once it is back the
// backlog drains to 0.
func TestMetricsShowOutboxBacklog(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 10)

	if err := sys.StopBroker(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, c.place(fmt.Sprintf("c-%d", i), item{"A-1", 1}).ID)
	}
	orders := metricsURLs(sys.Instances("order"))
	eventually(t, 5*time.Second, "a failed relay round", func() bool {
		return metricstest.ScrapeAll(t, orders...).Sum("converge_relay_errors_total") > 0
	})
	ord := metricstest.Scrape(t, orders[0])
	if got := ord.Sum("converge_outbox_backlog_events"); got != 5 {
		t.Errorf("backlog during the outage: %v, want 5", got)
	}
	if got := ord.Sum("converge_outbox_oldest_age_seconds"); got <= 0 {
		t.Errorf("age of the oldest unpublished event during the outage: %v, want > 0", got)
	}
	// A stopped broker process serves nothing; the embedded broker's
	// endpoint outlives it and says it is down.
	for _, b := range sys.BrokerEndpoints() {
		f, err := metricstest.TryScrape(b + "/metrics")
		if err != nil && !clusterTopology(t) {
			t.Errorf("the embedded broker's endpoint while it is stopped: %v", err)
		}
		if err == nil && f.Sum("converge_broker_up") != 0 {
			t.Errorf("converge_broker_up of %s while stopped: %v, want 0", b, f.Sum("converge_broker_up"))
		}
		if resp, err := http.Get(b + "/readyz"); err == nil {
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("broker /readyz of %s while stopped: %s, want 503", b, resp.Status)
			}
			resp.Body.Close()
		}
	}

	if err := sys.StartBroker(); err != nil {
		t.Fatal(err)
	}
	c.finals(ids...)
	eventually(t, 5*time.Second, "the backlog back to 0", func() bool {
		f := metricstest.Scrape(t, orders[0])
		return f.Sum("converge_outbox_backlog_events") == 0 && f.Sum("converge_outbox_oldest_age_seconds") == 0
	})
	for _, b := range sys.BrokerEndpoints() {
		if got := metricstest.Scrape(t, b+"/metrics").Sum("converge_broker_up"); got != 1 {
			t.Errorf("converge_broker_up of %s after the restart: %v, want 1", b, got)
		}
	}
}

// metricsURLs turns base URLs into their /metrics URLs.
func metricsURLs(bases []string) []string {
	out := make([]string, len(bases))
	for i, b := range bases {
		out[i] = b + "/metrics"
	}
	return out
}
