package system_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/metrics/metricstest"
)

func TestOrderLifecycle(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("A-1", 10)
	c.setStock("B-2", 1)

	// Confirmed: the stock is reserved.
	o := c.place("c-1", item{"A-1", 2})
	if got := c.final(o.ID); got.Status != "CONFIRMED" || got.Reason != "" {
		t.Fatalf("order %s: got %s %q, want CONFIRMED", o.ID, got.Status, got.Reason)
	}
	if s := c.stock("A-1"); s.Reserved != 2 || s.Available != 8 {
		t.Fatalf("A-1 after confirm: got reserved %d available %d, want 2 and 8", s.Reserved, s.Available)
	}

	// Rejected, all or nothing: B-2 has 1, so the order reserves no A-1 either.
	r := c.place("c-1", item{"A-1", 1}, item{"B-2", 5})
	if got := c.final(r.ID); got.Status != "REJECTED" || got.Reason != "insufficient_stock" {
		t.Fatalf("order %s: got %s %q, want REJECTED insufficient_stock", r.ID, got.Status, got.Reason)
	}
	if s := c.stock("A-1"); s.Reserved != 2 {
		t.Fatalf("A-1 after a rejected order: reserved %d, want 2 (no partial reservation)", s.Reserved)
	}
	u := c.place("c-2", item{"NOPE-1", 1})
	if got := c.final(u.ID); got.Status != "REJECTED" || got.Reason != "unknown_sku" {
		t.Fatalf("order %s: got %s %q, want REJECTED unknown_sku", u.ID, got.Status, got.Reason)
	}

	// Stock cannot be set below what is reserved.
	if resp := c.do("PUT", "/api/v1/inventory/A-1", map[string]int{"on_hand": 1}); resp.Status != http.StatusConflict {
		t.Fatalf("PUT on_hand below reserved: status %d, want 409: %s", resp.Status, resp.Body)
	}

	// Cancel releases the stock; a second cancel is a no-op; a rejected order cannot be cancelled.
	if resp := c.do("POST", "/api/v1/orders/"+o.ID+"/cancel", nil); resp.Status != http.StatusAccepted {
		t.Fatalf("cancel: status %d, want 202: %s", resp.Status, resp.Body)
	}
	eventually(t, 10*time.Second, "A-1 released", func() bool { return c.stock("A-1").Reserved == 0 })
	if resp := c.do("POST", "/api/v1/orders/"+o.ID+"/cancel", nil); resp.Status != http.StatusOK {
		t.Fatalf("second cancel: status %d, want 200: %s", resp.Status, resp.Body)
	}
	if resp := c.do("POST", "/api/v1/orders/"+r.ID+"/cancel", nil); resp.Status != http.StatusConflict {
		t.Fatalf("cancel of a rejected order: status %d, want 409: %s", resp.Status, resp.Body)
	}
	if got := c.final(o.ID); got.Status != "CANCELLED" {
		t.Fatalf("cancelled order reads %s", got.Status)
	}

	// A pending order cancelled at once: whatever inventory did first, nothing stays reserved.
	p := c.place("c-3", item{"A-1", 3})
	c.do("POST", "/api/v1/orders/"+p.ID+"/cancel", nil)

	// Listing filters and pages.
	resp := c.do("GET", "/api/v1/orders?customer_id=c-1&limit=1", nil)
	var page struct {
		Items []orderView `json:"items"`
		Next  string      `json:"next"`
	}
	resp.decode(t, &page)
	if len(page.Items) != 1 || page.Items[0].ID != o.ID || page.Next != o.ID {
		t.Fatalf("first page of c-1: got %+v, want [%s] and next %s", page, o.ID, o.ID)
	}
	c.do("GET", "/api/v1/orders?customer_id=c-1&limit=1&after="+page.Next, nil).decode(t, &page)
	if len(page.Items) != 1 || page.Items[0].ID != r.ID {
		t.Fatalf("second page of c-1: got %+v, want [%s]", page, r.ID)
	}
	c.do("GET", "/api/v1/orders?status=REJECTED", nil).decode(t, &page)
	if len(page.Items) != 2 || page.Next != "" {
		t.Fatalf("REJECTED orders: got %d (next %q), want 2 and no next page", len(page.Items), page.Next)
	}
	if resp := c.do("GET", "/api/v1/orders/0190a6c4-0000-7000-8000-000000000000", nil); resp.Status != http.StatusNotFound {
		t.Fatalf("unknown order: status %d, want 404", resp.Status)
	}
	if resp := c.do("GET", "/api/v1/inventory/ZZZ", nil); resp.Status != http.StatusNotFound {
		t.Fatalf("unknown sku: status %d, want 404", resp.Status)
	}
	checkInvariants(t, sys)
	if s := c.stock("A-1"); s.Reserved != 0 {
		t.Fatalf("A-1 at the end: reserved %d, want 0", s.Reserved)
	}
}

// 500 orders race for 100 units: exactly 100 are confirmed.
func TestConcurrentOrdersNeverOversell(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("HOT-1", 100)

	const n, workers = 500, 32
	ids := make(chan string, n)
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				ids <- c.place(fmt.Sprintf("c-%d", i), item{"HOT-1", 1}).ID
			}
		})
	}
	began := time.Now()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(ids)
	accepted := time.Since(began)

	var placed []string
	for id := range ids {
		placed = append(placed, id)
	}
	count := map[string]int{}
	for _, o := range c.finals(placed...) {
		count[o.Status]++
		if o.Status == "REJECTED" && o.Reason != "insufficient_stock" {
			t.Errorf("order %s rejected for %q, want insufficient_stock", o.ID, o.Reason)
		}
	}
	t.Logf("%d orders accepted in %s, all final after %s", n, accepted, time.Since(began))
	if count["CONFIRMED"] != 100 || count["REJECTED"] != 400 || count["PENDING"] != 0 {
		t.Fatalf("outcomes: got %v, want 100 CONFIRMED and 400 REJECTED", count)
	}
	if s := c.stock("HOT-1"); s.Reserved != 100 || s.Available != 0 {
		t.Fatalf("HOT-1: got reserved %d available %d, want 100 and 0", s.Reserved, s.Available)
	}
	checkInvariants(t, sys)
}

func TestIdempotencyKey(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 100)
	body := map[string]any{"customer_id": "idem", "items": []item{{"A-1", 1}}}

	// Many requests race with one key: one order.
	const n = 20
	got := make(chan response, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { got <- c.do("POST", "/api/v1/orders", body, "Idempotency-Key", "key-1") })
	}
	wg.Wait()
	close(got)
	ids := map[string]int{}
	for r := range got {
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST with key: status %d, want 202: %s", r.Status, r.Body)
		}
		var o orderView
		r.decode(t, &o)
		ids[o.ID]++
	}
	if len(ids) != 1 {
		t.Fatalf("one key made %d orders: %v", len(ids), ids)
	}
	var page struct {
		Items []orderView `json:"items"`
	}
	c.do("GET", "/api/v1/orders?customer_id=idem", nil).decode(t, &page)
	if len(page.Items) != 1 {
		t.Fatalf("stored orders for the key: %d, want 1", len(page.Items))
	}
	// The same key with another body is refused and stores nothing.
	other := map[string]any{"customer_id": "idem", "items": []item{{"A-1", 2}}}
	if r := c.do("POST", "/api/v1/orders", other, "Idempotency-Key", "key-1"); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("key reused with another body: status %d, want 422: %s", r.Status, r.Body)
	}
	// Another key is another order.
	if r := c.do("POST", "/api/v1/orders", body, "Idempotency-Key", "key-2"); r.Status != http.StatusAccepted {
		t.Fatalf("second key: status %d", r.Status)
	}
	c.do("GET", "/api/v1/orders?customer_id=idem", nil).decode(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("orders after a second key: %d, want 2", len(page.Items))
	}
}

// With Prefer: wait=N (RFC 7240) the POST answers once the order is final,
// in one round trip: 201 with the order it created, 200 with the order a
// replayed key names; without the preference, or with wait=0, 202 PENDING.
func TestPlaceWithPreferWait(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 10)
	place := func(customer, sku string, headers ...string) (response, orderView) {
		t.Helper()
		r := c.do("POST", "/api/v1/orders", map[string]any{"customer_id": customer, "items": []item{{sku, 1}}}, headers...)
		var o orderView
		r.decode(t, &o)
		if r.Header.Get("Location") != "/api/v1/orders/"+o.ID {
			t.Fatalf("Location %q, want /api/v1/orders/%s", r.Header.Get("Location"), o.ID)
		}
		return r, o
	}
	tests := []struct {
		name, sku, prefer, key string
		status                 int
		order, reason          string
	}{
		{"confirmed", "A-1", "wait=10", "", http.StatusCreated, "CONFIRMED", ""},
		{"rejected, among other preferences", "NOPE-1", `respond-async, WAIT="10"; x=y`, "", http.StatusCreated, "REJECTED", "unknown_sku"},
		{"with a key", "A-1", "wait=10", "k-1", http.StatusCreated, "CONFIRMED", ""},
		{"the key replayed", "A-1", "wait=10", "k-1", http.StatusOK, "CONFIRMED", ""},
		{"no wait", "A-1", "return=minimal", "", http.StatusAccepted, "PENDING", ""},
		{"wait=0", "A-1", "wait=0", "", http.StatusAccepted, "PENDING", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, o := place("prefer", tt.sku, "Prefer", tt.prefer, "Idempotency-Key", tt.key)
			if r.Status != tt.status || o.Status != tt.order || o.Reason != tt.reason {
				t.Fatalf("status %d, order %s %q; want %d, %s %q: %s", r.Status, o.Status, o.Reason, tt.status, tt.order, tt.reason, r.Body)
			}
			if replayed := r.Header.Get("Idempotent-Replayed") == "true"; replayed != (tt.status == http.StatusOK) {
				t.Fatalf("Idempotent-Replayed %v on a %d", replayed, r.Status)
			}
			applied := ""
			if tt.status != http.StatusAccepted {
				applied = "wait=10"
			}
			if got := r.Header.Get("Preference-Applied"); got != applied {
				t.Errorf("Preference-Applied %q, want %q", got, applied)
			}
			if !slices.Contains(r.Header.Values("Vary"), "Prefer") {
				t.Errorf("Vary %q does not name Prefer", r.Header.Values("Vary"))
			}
		})
	}
	checkInvariants(t, sys)
}

// With the broker down an order cannot leave PENDING: a POST that prefers
// to wait is answered when its wait runs out, with the 202 it would have
// had without the preference, and the order converges once the broker is
// back.
func TestPlaceWithPreferWaitRunsOut(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 10)
	if err := sys.StopBroker(); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	r := c.do("POST", "/api/v1/orders", map[string]any{"customer_id": "prefer", "items": []item{{"A-1", 1}}}, "Prefer", "wait=1")
	var o orderView
	r.decode(t, &o)
	if r.Status != http.StatusAccepted || o.Status != "PENDING" || r.Header.Get("Preference-Applied") != "wait=1" {
		t.Errorf("status %d, order %s, Preference-Applied %q; want 202, PENDING, wait=1: %s", r.Status, o.Status, r.Header.Get("Preference-Applied"), r.Body)
	}
	if took := time.Since(sent); took < time.Second {
		t.Errorf("answered after %s, before the wait of 1s ran out", took)
	}
	if err := sys.StartBroker(); err != nil {
		t.Fatal(err)
	}
	if got := c.final(o.ID); got.Status != "CONFIRMED" {
		t.Errorf("order %s after the broker came back: %s, want CONFIRMED", o.ID, got.Status)
	}
	checkInvariants(t, sys)
}

func TestInvalidInputsChangeNothing(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("A-1", 5)

	long := strings.Repeat("x", 129)
	items := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`{"sku":"S-%d","quantity":1}`, i)
		}
		return `{"customer_id":"c","items":[` + strings.Join(parts, ",") + `]}`
	}
	huge := `{"customer_id":"` + strings.Repeat("x", 1<<20) + `","items":[]}`
	tests := []struct {
		name, method, path, body string
		headers                  []string
		want                     int
	}{
		{"no key", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Authorization", ""}, 401},
		{"wrong key", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Authorization", "Bearer nope"}, 401},
		{"unknown field", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}],"x":1}`, nil, 400},
		{"missing customer", "POST", "/api/v1/orders", `{"items":[{"sku":"A-1","quantity":1}]}`, nil, 400},
		{"missing items", "POST", "/api/v1/orders", `{"customer_id":"c"}`, nil, 400},
		{"customer too long", "POST", "/api/v1/orders", `{"customer_id":"` + long + `","items":[{"sku":"A-1","quantity":1}]}`, nil, 400},
		{"no items", "POST", "/api/v1/orders", `{"customer_id":"c","items":[]}`, nil, 400},
		{"101 items", "POST", "/api/v1/orders", items(101), nil, 400},
		{"bad sku", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A 1","quantity":1}]}`, nil, 400},
		{"long sku", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"` + strings.Repeat("A", 65) + `","quantity":1}]}`, nil, 400},
		{"zero quantity", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":0}]}`, nil, 400},
		{"quantity too big", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":10001}]}`, nil, 400},
		{"fractional quantity", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1.5}]}`, nil, 400},
		{"string quantity", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":"1"}]}`, nil, 400},
		{"same sku twice", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1},{"sku":"A-1","quantity":1}]}`, nil, 400},
		{"malformed json", "POST", "/api/v1/orders", `{"customer_id":`, nil, 400},
		{"two objects", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}{}`, nil, 400},
		{"body over 1 MiB", "POST", "/api/v1/orders", huge, nil, 413},
		{"wrong content type", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Content-Type", "text/plain"}, 415},
		{"unknown route", "GET", "/api/v1/nothing", "", nil, 404},
		{"wrong method", "DELETE", "/api/v1/orders", "", nil, 405},
		{"bad status filter", "GET", "/api/v1/orders?status=DONE", "", nil, 400},
		{"bad limit", "GET", "/api/v1/orders?limit=0", "", nil, 400},
		{"limit too big", "GET", "/api/v1/inventory?limit=501", "", nil, 400},
		{"bad wait", "GET", "/api/v1/orders/x?wait=forever", "", nil, 400},
		{"wait too long", "GET", "/api/v1/orders/x?wait=31s", "", nil, 400},
		{"bad idempotency key", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400},
		{"negative on_hand", "PUT", "/api/v1/inventory/A-1", `{"on_hand":-1}`, nil, 400},
		{"missing on_hand", "PUT", "/api/v1/inventory/A-1", `{}`, nil, 400},
		{"bad sku in path", "PUT", "/api/v1/inventory/A%201", `{"on_hand":1}`, nil, 400},
		{"stock unknown field", "PUT", "/api/v1/inventory/A-1", `{"on_hand":1,"reserved":0}`, nil, 400},
		{"quantity in capitals", "POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"sku":"A-1","QUANTITY":1}]}`, nil, 400},
		{"sku in title case", "POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"Sku":"A-1","quantity":1}]}`, nil, 400},
		{"items in title case", "POST", "/api/v1/orders", `{"customer_id":"c-1","Items":[{"sku":"A-1","quantity":1}]}`, nil, 400},
		{"long-s look-alike key", "POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"ſku":"A-1","quantity":1}]}`, nil, 400},
		{"repeated key", "POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"sku":"A-1","quantity":1,"quantity":2}]}`, nil, 400},
		{"ON_HAND in capitals", "PUT", "/api/v1/inventory/A-1", `{"ON_HAND":7}`, nil, 400},
		{"unknown query parameter", "GET", "/api/v1/orders?aftr=x", "", nil, 400},
		{"query parameter twice", "GET", "/api/v1/inventory?limit=1&limit=2", "", nil, 400},
		{"query on a place", "POST", "/api/v1/orders?dry_run=true", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, nil, 400},
		{"prefer wait too long", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "wait=31"}, 400},
		{"prefer wait not a number", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "respond-async, wait=5s"}, 400},
		{"prefer wait negative", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "wait=-1"}, 400},
		{"prefer wait signed", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "wait=+5"}, 400},
		{"prefer wait overflowing", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "wait=18446744074"}, 400},
		{"prefer wait half quoted", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", `wait="5`}, 400},
		{"prefer wait empty", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, []string{"Prefer", "wait="}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.body != "" {
				body = tt.body
			}
			r := c.do(tt.method, tt.path, body, tt.headers...)
			if r.Status != tt.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.want, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q, want application/problem+json (body %s)", ct, r.Body)
			}
		})
	}
	// Nothing was stored, and the stock is as it was.
	var page struct {
		Items []orderView `json:"items"`
	}
	c.do("GET", "/api/v1/orders", nil).decode(t, &page)
	if len(page.Items) != 0 {
		t.Fatalf("orders after invalid requests: %d, want 0", len(page.Items))
	}
	if s := c.stock("A-1"); s.OnHand != 5 || s.Reserved != 0 {
		t.Fatalf("A-1 after invalid requests: %+v, want on_hand 5 reserved 0", s)
	}
}

// While the broker is down, orders are still accepted; when it is back,
// they all converge, none lost, none applied twice.
func TestBrokerOutage(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("A-1", 30)

	if err := sys.StopBroker(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 50 {
		ids = append(ids, c.place(fmt.Sprintf("c-%d", i), item{"A-1", 1}).ID)
	}
	// Nothing can converge without the broker.
	time.Sleep(500 * time.Millisecond)
	if o := c.do("GET", "/api/v1/orders/"+ids[0], nil); !strings.Contains(string(o.Body), `"PENDING"`) {
		t.Fatalf("order during the outage: %s, want PENDING", o.Body)
	}
	if err := sys.StartBroker(); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, o := range c.finals(ids...) {
		count[o.Status]++
	}
	if count["CONFIRMED"] != 30 || count["REJECTED"] != 20 {
		t.Fatalf("after the outage: %v, want 30 CONFIRMED and 20 REJECTED", count)
	}
	checkInvariants(t, sys)
}

// Killing a gateway under traffic fails requests only until the load
// balancer's health check has taken it out.
func TestGatewayKilledUnderTraffic(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 1_000_000)

	const window = 2 * time.Second
	var (
		mu       sync.Mutex
		failures []time.Time
		ok       int
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var killedAt time.Time
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				var r response
				var err error
				if i%2 == 0 {
					r, err = c.try("POST", "/api/v1/orders", map[string]any{"customer_id": fmt.Sprint("w", w), "items": []item{{"A-1", 1}}})
				} else {
					r, err = c.try("GET", "/api/v1/inventory/A-1", nil)
				}
				mu.Lock()
				if err != nil || (r.Status != http.StatusAccepted && r.Status != http.StatusOK) {
					failures = append(failures, time.Now())
				} else {
					ok++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	if err := sys.KillGateway(0); err != nil {
		t.Fatal(err)
	}
	// The connect retry sends the dead instance's requests to the live one,
	// so clients alone cannot tell whether the balancer ever noticed.
	waitForRotation(t, sys, window, sys.Gateways()[1:]...)
	wg.Wait()
	if ok == 0 {
		t.Fatal("no request succeeded")
	}
	for _, f := range failures {
		if f.Sub(killedAt) > window || f.Before(killedAt) {
			t.Fatalf("a request failed %s after the kill (window %s); %d failures, %d ok", f.Sub(killedAt), window, len(failures), ok)
		}
	}
	t.Logf("%d requests ok, %d failed inside the %s window", ok, len(failures), window)
}

// Without traffic, only the active health check can see that an instance
// died: it must take it out of rotation on its own and leave the other in.
func TestIdleGatewayKilledLeavesRotation(t *testing.T) {
	sys := start(t)
	if got, err := sys.InRotation(); err != nil || !slices.Equal(got, sys.Gateways()) {
		t.Fatalf("in rotation at start: got %v (%v), want %v", got, err, sys.Gateways())
	}
	if err := sys.KillGateway(0); err != nil {
		t.Fatal(err)
	}
	// Checks run every 500ms and two failures take an instance out.
	waitForRotation(t, sys, 2*time.Second, sys.Gateways()[1:]...)
}

// A message that is not an event lands in the dead-letter stream, and the
// orders after it still flow.
func TestPoisonMessageIsDeadLettered(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("A-1", 10)

	ctx := context.Background()
	conn, err := sys.Broker(ctx, "poisoner")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.PublishBatch(ctx, []broker.Message{
		{ID: "poison-1", Subject: "orders.created", Data: []byte("this is not an event")},
		{ID: "poison-2", Subject: "orders.created", Data: []byte(`{"specversion":"1.0","id":"x","source":"s","type":"io.converge.order.shipped","subject":"o","schemaversion":"1","data":{}}`)},
	}); err != nil {
		t.Fatal(err)
	}
	o := c.place("c-1", item{"A-1", 1})
	if got := c.final(o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order after the poison: %s, want CONFIRMED", got.Status)
	}

	js := conn.JetStream()
	stream, err := js.Stream(ctx, events.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "2 dead letters", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})
	want := map[string]string{"poison-1": "malformed", "poison-2": "unknown event"}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		h := nats.Header(m.Header)
		id := h.Get(broker.HeaderOriginalMsgID)
		if m.Subject != "dlq."+"inventory" || !strings.Contains(h.Get(broker.HeaderError), want[id]) {
			t.Fatalf("dead letter %d: subject %s, id %q, error %q; want dlq.inventory and an error with %q",
				seq, m.Subject, id, h.Get(broker.HeaderError), want[id])
		}
		if h.Get(broker.HeaderOriginalSubject) != "orders.created" {
			t.Fatalf("dead letter %d: original subject %q", seq, h.Get(broker.HeaderOriginalSubject))
		}
	}
}

// A restart keeps every order and every unit of stock, and the flow goes on.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	first, err := startFor(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, first)
	c.setStock("A-1", 10)
	o := c.place("c-1", item{"A-1", 4})
	c.final(o.ID)
	stop(t, first)

	// The restarted system gets a wait budget of its own (a subtest's):
	// the first one's must not be spent on stopping and starting.
	t.Run("after restart", func(t *testing.T) {
		second := startIn(t, dir)
		c := newClient(t, second)
		if got := c.final(o.ID); got.Status != "CONFIRMED" {
			t.Fatalf("order after restart: %s, want CONFIRMED", got.Status)
		}
		if s := c.stock("A-1"); s.Reserved != 4 {
			t.Fatalf("A-1 after restart: reserved %d, want 4", s.Reserved)
		}
		p := c.place("c-1", item{"A-1", 6})
		if got := c.final(p.ID); got.Status != "CONFIRMED" {
			t.Fatalf("new order after restart: %s, want CONFIRMED", got.Status)
		}
		checkInvariants(t, second)
	})
}

// A stopped system leaves no goroutine behind: every loop is tied to a
// context or a Close. It looks for goroutines running converge's or NATS's
// code, so goroutines of other tests ending meanwhile cannot hide a leak.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	if clusterTopology(t) {
		t.Skip("counts the goroutines of this process, where only the embedded topology runs; in the cluster topology each process must exit on SIGTERM in time, which every test's shutdown checks")
	}
	dir := t.TempDir()
	sys, err := startFor(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, sys)
	c.setStock("A-1", 1)
	c.final(c.place("c-1", item{"A-1", 1}).ID)
	if len(leaked()) == 0 {
		t.Fatal("found no converge goroutine while the system runs: the leak check looks for the wrong thing")
	}
	c.http.CloseIdleConnections()
	stop(t, sys)

	deadline := time.Now().Add(5 * time.Second)
	for {
		left := leaked()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after shutdown:\n\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every part's goroutines carry the label of the part (role.Labeled), so
// that a CPU profile of converge dev or converge bench splits by part:
// each part has labelled goroutines, and nats-server's loops for the
// services' in-process connections count as the broker's, not as the
// service's that opened them.
func TestPartsAreLabelledForProfiles(t *testing.T) {
	if clusterTopology(t) {
		t.Skip("reads the goroutines of this process, where only the embedded topology runs")
	}
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 1)
	c.final(c.place("c-1", item{"A-1", 1}).ID) // every hop has served
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	label := regexp.MustCompile(`# labels: \{.*"role":"([a-z]+)"`)
	roles := map[string]int{} // goroutines by role label
	var connLoops []string    // role labels of nats-server's client read loops
	for _, rec := range strings.Split(b.String(), "\n\n") {
		var n int
		if _, err := fmt.Sscanf(rec, "%d @", &n); err != nil {
			continue // the header
		}
		m := label.FindStringSubmatch(rec)
		role := ""
		if m != nil {
			role = m[1]
			roles[role] += n
		}
		if strings.Contains(rec, "nats-server/v2/server.(*client).readLoop") {
			connLoops = append(connLoops, role)
		}
	}
	for _, want := range []string{"lb", "gateway", "order", "inventory", "broker"} {
		if roles[want] == 0 {
			t.Errorf("no goroutine labelled role=%s; goroutines by role: %v", want, roles)
		}
	}
	if len(connLoops) == 0 {
		t.Error("found no nats-server client read loop: the check below looks for the wrong thing")
	}
	for _, r := range connLoops {
		if r != "broker" {
			t.Errorf("a nats-server client read loop is labelled role=%q, want broker (labels of all: %q)", r, connLoops)
			break
		}
	}
}

// leaked returns the stacks of goroutines that run converge's packages or
// NATS, other than the tests' own.
func leaked() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "system_test.") {
			continue
		}
		if strings.Contains(g, "convergehq/converge/internal/") || strings.Contains(g, "nats-io/") {
			out = append(out, g)
		}
	}
	return out
}

// A shutdown answers requests held open by ?wait= instead of waiting for
// them to time out.
func TestShutdownReleasesLongPolls(t *testing.T) {
	sys, err := startFor(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, sys)
	if err := sys.StopBroker(); err != nil { // the order stays PENDING
		t.Fatal(err)
	}
	o := c.place("c-1", item{"A-1", 1})
	got := make(chan response, 1)
	go func() {
		r, _ := c.try("GET", "/api/v1/orders/"+o.ID+"?wait=30s", nil)
		got <- r
	}()
	// Until the long poll is held by an order service (each instance
	// counts the scrape of itself too).
	orders := metricsURLs(sys.Instances("order"))
	eventually(t, 10*time.Second, "the long poll to reach the order service", func() bool {
		return metricstest.ScrapeAll(t, orders...).Sum("converge_http_requests_in_flight") > float64(len(orders))
	})
	began := time.Now()
	stop(t, sys)
	if d := time.Since(began); d > 10*time.Second {
		t.Fatalf("shutdown took %s with a long poll open, want well under the 30s wait", d)
	}
	r := <-got
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"PENDING"`) {
		t.Fatalf("long poll during shutdown: status %d %s, want 200 with the PENDING order", r.Status, r.Body)
	}
}

// The checker reads a running system: each database is one snapshot, so the
// invariants that hold inside one database hold at every instant.
func TestCheckWhileRunning(t *testing.T) {
	dir := t.TempDir()
	sys := startIn(t, dir)
	c := newClient(t, sys)
	c.setStock("A-1", 1000)
	// The load goes on until the checker has read the system several
	// times while orders were being written.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	placed := make(chan struct{}, 1)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := c.try("POST", "/api/v1/orders", map[string]any{"customer_id": "c", "items": []item{{"A-1", 1}}}); err != nil {
					t.Errorf("POST: %v", err)
					return
				}
				select {
				case placed <- struct{}{}:
				default:
				}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	const runs = 5
	for run := range runs {
		select { // at least one order between two runs
		case <-placed:
		case <-time.After(time.Until(deadline(t))):
			t.Fatalf("no order was placed before checker run %d within the test's wait budget", run)
		}
		for _, r := range runCheck(t, context.Background(), sys) {
			if !r.OK && (strings.HasPrefix(r.Name, "reserved equals") || strings.HasPrefix(r.Name, "0 <= reserved")) {
				t.Fatalf("under load, run %d: %s: %s", run, r.Name, r.Detail)
			}
		}
	}
	cancel()
	wg.Wait()
	checkInvariants(t, sys)
}

// curl sends Expect: 100-continue with a large body; the final answer must
// still carry its X-Request-ID through the load balancer and the gateway.
func TestExpectContinueKeepsRequestID(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 5)
	for _, tt := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"accepted", "POST", "/api/v1/orders", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}]}`, 202},
		{"refused by the service", "POST", "/api/v1/orders", `{"customer_id":"c","items":[]}`, 400},
		{"set stock", "PUT", "/api/v1/inventory/A-1", `{"on_hand":6}`, 200},
	} {
		r := c.do(tt.method, tt.path, tt.body, "Expect", "100-continue", "X-Request-ID", "expect-"+strings.ReplaceAll(tt.name, " ", "-"))
		if r.Status != tt.want {
			t.Errorf("%s: status %d, want %d: %s", tt.name, r.Status, tt.want, r.Body)
		}
		if got := r.Header.Values("X-Request-ID"); len(got) != 1 || got[0] != "expect-"+strings.ReplaceAll(tt.name, " ", "-") {
			t.Errorf("%s: X-Request-ID %q, want exactly the one sent", tt.name, got)
		}
	}
}
