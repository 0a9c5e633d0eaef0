package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "test-key"

// fakeAPI fakes the parts of the converge API that load uses. Orders are
// decided when placed, against the stock, and become visible as final
// settle later.
type fakeAPI struct {
	t      *testing.T
	settle time.Duration
	// reject, if set, answers the n-th POST (from 0) with a status other
	// than 202; 0 accepts it.
	reject func(n int) int
	// stuck, if set, keeps the n-th accepted order PENDING for ever.
	stuck func(n int) bool
	// onPost, if set, runs on every POST.
	onPost func(n int)
	// shortWait, if set, answers the n-th POST at once with 202 even if
	// it prefers to wait, as the API does when the wait runs out.
	shortWait func(n int) bool

	mu       sync.Mutex
	onHand   map[string]int64
	reserved map[string]int64
	orders   map[string]*fakeOrder
	posts    int
	prefers  int // POSTs with Prefer: wait=30
	gets     int
	problems []string // ways the client broke the API's contract
}

type fakeOrder struct {
	created time.Time
	readyAt time.Time
	final   string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	return &fakeAPI{
		t:        t,
		settle:   20 * time.Millisecond,
		onHand:   map[string]int64{},
		reserved: map[string]int64{},
		orders:   map[string]*fakeOrder{},
	}
}

func (f *fakeAPI) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) < 20 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

func (f *fakeAPI) serve(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/inventory/{sku}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		s := r.PathValue("sku")
		if _, ok := f.onHand[s]; !ok {
			http.Error(w, `{"detail":"not found"}`, http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"sku": s, "on_hand": f.onHand[s], "reserved": f.reserved[s]})
	})
	mux.HandleFunc("PUT /api/v1/inventory/{sku}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			OnHand *int64 `json:"on_hand"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.OnHand == nil {
			f.problem("PUT inventory: bad body: %v", err)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		s := r.PathValue("sku")
		if *in.OnHand < f.reserved[s] {
			http.Error(w, `{"detail":"below reserved"}`, http.StatusConflict)
			return
		}
		f.onHand[s] = *in.OnHand
		writeJSON(w, http.StatusOK, map[string]any{"sku": s, "on_hand": *in.OnHand})
	})
	mux.HandleFunc("POST /api/v1/orders", f.place)
	mux.HandleFunc("GET /api/v1/orders/{id}", f.get)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer "+testKey {
			f.problem("%s %s: Authorization %q", r.Method, r.URL.Path, got)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "missing or wrong API key"})
			return
		}
		if r.Method != http.MethodGet && r.Header.Get("Content-Type") != "application/json" {
			f.problem("%s %s: Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, p := range f.problems {
			t.Errorf("fake API: %s", p)
		}
	})
	return srv
}

func (f *fakeAPI) place(w http.ResponseWriter, r *http.Request) {
	var in struct {
		CustomerID string `json:"customer_id"`
		Items      []struct {
			SKU      string `json:"sku"`
			Quantity int    `json:"quantity"`
		} `json:"items"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		f.problem("POST order: %v", err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	n := f.posts
	f.posts++
	f.mu.Unlock()
	if f.onPost != nil {
		f.onPost(n)
	}
	if !strings.HasPrefix(in.CustomerID, "load-") || len(in.Items) == 0 {
		f.problem("POST order: customer %q with %d items", in.CustomerID, len(in.Items))
	}
	seen := map[string]bool{}
	for _, it := range in.Items {
		if seen[it.SKU] || it.Quantity < 1 || it.Quantity > 3 {
			f.problem("POST order: item %+v (twice: %v)", it, seen[it.SKU])
		}
		seen[it.SKU] = true
	}
	if f.reject != nil {
		if code := f.reject(n); code != 0 {
			writeJSON(w, code, map[string]string{"detail": "injected failure " + strconv.Itoa(code)})
			return
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range in.Items {
		if _, ok := f.onHand[it.SKU]; !ok {
			f.problem("POST order: SKU %q has no stock set", it.SKU)
		}
	}
	now := time.Now()
	o := &fakeOrder{created: now, readyAt: now.Add(f.settle), final: "CONFIRMED"}
	for _, it := range in.Items {
		if f.onHand[it.SKU]-f.reserved[it.SKU] < int64(it.Quantity) {
			o.final = "REJECTED"
		}
	}
	if o.final == "CONFIRMED" {
		for _, it := range in.Items {
			f.reserved[it.SKU] += int64(it.Quantity)
		}
	}
	if f.stuck != nil && f.stuck(n) {
		o.final = "PENDING"
	}
	id := fmt.Sprintf("o-%d", n)
	f.orders[id] = o
	prefer := r.Header.Get("Prefer")
	if prefer != "" {
		f.prefers++
		if prefer != "wait=30" {
			f.problems = append(f.problems, fmt.Sprintf("POST order: Prefer %q", prefer))
		}
	}
	if prefer == "" || o.final == "PENDING" || (f.shortWait != nil && f.shortWait(n)) {
		writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "customer_id": in.CustomerID, "status": "PENDING",
			"created_at": o.created, "updated_at": o.created})
		return
	}
	f.mu.Unlock()
	time.Sleep(f.settle) // the order settles while the POST waits
	f.mu.Lock()
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "customer_id": in.CustomerID, "status": o.final,
		"reason": reason(o.final), "created_at": o.created, "updated_at": o.readyAt})
}

func reason(status string) string {
	if status == "REJECTED" {
		return "insufficient_stock"
	}
	return ""
}

func (f *fakeAPI) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	o, ok := f.orders[r.PathValue("id")]
	f.gets++
	f.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "no such order"})
		return
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d > 30*time.Second {
			f.problem("GET order: wait %q", s)
		}
		wait = d
	}
	status, updated := "PENDING", o.created
	if o.final != "PENDING" {
		if d := time.Until(o.readyAt); d > 0 && d < wait {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if !time.Now().Before(o.readyAt) {
			status, updated = o.final, o.readyAt
		}
	} else {
		select {
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("id"), "status": status, "reason": reason(status),
		"created_at": o.created, "updated_at": updated})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func testConfig(url string) Config {
	cfg := DefaultConfig()
	cfg.URL, cfg.APIKey = url, testKey
	cfg.Orders, cfg.Concurrency, cfg.SKUs, cfg.Items = 300, 16, 4, 2
	cfg.Timeout = 8 * time.Second
	cfg.Seed = 1
	return cfg
}

func TestRunCountsEveryOrder(t *testing.T) {
	f := newFakeAPI(t)
	srv := f.serve(t)
	f.onHand["LOAD-1"], f.reserved["LOAD-1"] = 50, 7 // left over from an earlier run
	cfg := testConfig(srv.URL + "/")

	rep, err := Run(t.Context(), cfg, NewClient(cfg.Concurrency))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	f.mu.Lock()
	confirmed, rejected := 0, 0
	for _, o := range f.orders {
		switch o.final {
		case "CONFIRMED":
			confirmed++
		case "REJECTED":
			rejected++
		}
	}
	wantStock := DefaultStock(300, 2, 4) // 300 orders of 3 units on average, 80%, over 4 SKUs
	if wantStock != 180 {
		t.Errorf("DefaultStock(300, 2, 4) = %d, want 180", wantStock)
	}
	if got := f.onHand["LOAD-1"] - 7; got != wantStock {
		t.Errorf("LOAD-1: on_hand set to reserved + %d, want reserved + %d", got, wantStock)
	}
	if got := f.onHand["LOAD-4"]; got != wantStock {
		t.Errorf("LOAD-4: on_hand %d, want %d", got, wantStock)
	}
	posts := f.posts
	f.mu.Unlock()

	if posts != 300 || rep.Sent != 300 || rep.Accepted != 300 || len(rep.Errors) != 0 || len(rep.WaitErrors) != 0 {
		t.Errorf("posts %d, sent %d, accepted %d, errors %v, wait errors %v; want 300, 300, 300, none, none",
			posts, rep.Sent, rep.Accepted, rep.Errors, rep.WaitErrors)
	}
	if rep.Converged != 300 || rep.Pending() != 0 || rep.NotSent() != 0 {
		t.Errorf("converged %d, pending %d, not sent %d; want 300, 0, 0", rep.Converged, rep.Pending(), rep.NotSent())
	}
	if rep.Outcome["CONFIRMED"] != confirmed || rep.Outcome["REJECTED"] != rejected || confirmed+rejected != 300 {
		t.Errorf("outcome %v; the server confirmed %d and rejected %d", rep.Outcome, confirmed, rejected)
	}
	if rejected == 0 || confirmed < 150 {
		t.Errorf("confirmed %d, rejected %d: the default stock should confirm about 80%%", confirmed, rejected)
	}
	if rep.AcceptLatency.N != 300 || rep.ToFinal.N != 300 || rep.SeenFinal.N != 300 {
		t.Errorf("latency samples %d, order->final samples %d, seen final %d; want 300 each", rep.AcceptLatency.N, rep.ToFinal.N, rep.SeenFinal.N)
	}
	// The server's timestamps say exactly the settling time; the client
	// sees it later.
	if rep.ToFinal.P50 != f.settle || rep.ToFinal.Max != f.settle || rep.SeenFinal.P50 < f.settle {
		t.Errorf("order->final %v and seen final %v, want exactly %v by the server's times, and no less seen", rep.ToFinal, rep.SeenFinal, f.settle)
	}
	if rep.ConvergeSpan < rep.AcceptSpan || rep.AcceptRate() <= 0 || rep.EndToEndRate() <= 0 {
		t.Errorf("converge span %v, accept span %v, rates %v %v", rep.ConvergeSpan, rep.AcceptSpan, rep.AcceptRate(), rep.EndToEndRate())
	}
	if rep.Config.APIKey != "" || rep.Config.Stock != wantStock {
		t.Errorf("report config: key %q, stock %d", rep.Config.APIKey, rep.Config.Stock)
	}

	var b strings.Builder
	if err := rep.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"300 sent, 300 accepted (202), 0 errors",
		"converged     300 of 300 in ",
		fmt.Sprintf("CONFIRMED %d  REJECTED %d (insufficient_stock %d)  CANCELLED 0  PENDING 0", confirmed, rejected, rejected),
		"order->final  p50 20ms  p90 20ms  p99 20ms  p99.9 20ms  max 20ms",
		"upper bound",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	t.Logf("report:\n%s", out)
}

// With PreferWait an order takes one request: the POST waits for the
// outcome, and only an order whose wait ran out (202 PENDING) is followed
// with GETs.
func TestRunPreferWait(t *testing.T) {
	f := newFakeAPI(t)
	f.shortWait = func(n int) bool { return n%10 == 0 }
	srv := f.serve(t)
	cfg := testConfig(srv.URL)
	cfg.PreferWait = true

	rep, err := Run(t.Context(), cfg, NewClient(cfg.Concurrency))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	f.mu.Lock()
	posts, prefers, gets := f.posts, f.prefers, f.gets
	f.mu.Unlock()
	if posts != 300 || prefers != 300 || gets != 30 {
		t.Errorf("POSTs %d, with Prefer %d, GETs %d; want 300, 300 and one GET for each of the 30 answered 202", posts, prefers, gets)
	}
	if rep.Accepted != 300 || rep.Converged != 300 || len(rep.Errors) != 0 || len(rep.WaitErrors) != 0 {
		t.Errorf("accepted %d, converged %d, errors %v, wait errors %v; want 300, 300, none, none", rep.Accepted, rep.Converged, rep.Errors, rep.WaitErrors)
	}
	if rep.ToFinal.N != 300 || rep.ToFinal.P50 != f.settle || rep.ToFinal.Max != f.settle {
		t.Errorf("order->final %v, want 300 samples of exactly %v", rep.ToFinal, f.settle)
	}
	var b strings.Builder
	if err := rep.Print(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"300 accepted (201 or 202)", "POST          p50 ", "Prefer: wait=30"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRunCountsFailedOrdersByStatus(t *testing.T) {
	f := newFakeAPI(t)
	f.reject = func(n int) int {
		switch {
		case n%10 == 0:
			return http.StatusInternalServerError
		case n%50 == 5:
			return http.StatusServiceUnavailable
		}
		return 0
	}
	srv := f.serve(t)
	cfg := testConfig(srv.URL)
	cfg.Orders = 200

	rep, err := Run(t.Context(), cfg, nil)
	var re *RunError
	if !errors.As(err, &re) {
		t.Fatalf("Run error = %v, want a *RunError", err)
	}
	if !strings.Contains(err.Error(), "24 of 200 orders failed (HTTP 500 x20, HTTP 503 x4)") {
		t.Errorf("error %q does not count the failures by status", err)
	}
	if rep.Errors["500"] != 20 || rep.Errors["503"] != 4 || len(rep.Errors) != 2 {
		t.Errorf("errors %v, want 500: 20, 503: 4", rep.Errors)
	}
	if !strings.Contains(rep.ErrorDetails["500"], "injected failure 500") {
		t.Errorf("error details %v", rep.ErrorDetails)
	}
	if rep.Sent != 200 || rep.Accepted != 176 || rep.Converged != 176 || rep.Pending() != 0 {
		t.Errorf("sent %d, accepted %d, converged %d, pending %d; want 200, 176, 176, 0",
			rep.Sent, rep.Accepted, rep.Converged, rep.Pending())
	}
	var b strings.Builder
	_ = rep.Print(&b)
	if !strings.Contains(b.String(), "200 sent, 176 accepted (202), 24 errors") ||
		!strings.Contains(b.String(), "HTTP 500 x20   first: 500 Internal Server Error: injected failure 500") {
		t.Errorf("report:\n%s", b.String())
	}
}

func TestRunStopsAtTimeoutAndReportsPending(t *testing.T) {
	f := newFakeAPI(t)
	f.stuck = func(n int) bool { return n%4 == 0 }
	srv := f.serve(t)
	cfg := testConfig(srv.URL)
	cfg.Orders, cfg.Timeout = 40, 700*time.Millisecond

	began := time.Now()
	rep, err := Run(t.Context(), cfg, nil)
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Run took %v with a timeout of %v", took, cfg.Timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run error = %v, want one wrapping context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "10 of 40 accepted orders still PENDING") || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("error %q", err)
	}
	if rep.Accepted != 40 || rep.Converged != 30 || rep.Pending() != 10 || len(rep.Errors) != 0 || len(rep.WaitErrors) != 0 {
		t.Errorf("accepted %d, converged %d, pending %d, errors %v %v; want 40, 30, 10, none",
			rep.Accepted, rep.Converged, rep.Pending(), rep.Errors, rep.WaitErrors)
	}
	if !strings.Contains(rep.Stopped, "timeout of 700ms") {
		t.Errorf("Stopped = %q", rep.Stopped)
	}
}

func TestRunStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f := newFakeAPI(t)
	f.onPost = func(n int) {
		if n == 50 {
			cancel()
		}
	}
	srv := f.serve(t)
	cfg := testConfig(srv.URL)
	cfg.Orders, cfg.Concurrency = 100_000, 4

	rep, err := Run(ctx, cfg, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run error = %v, want one wrapping context.Canceled", err)
	}
	if rep.Stopped != "interrupted" || rep.Sent < 40 || rep.Sent > 60 || rep.NotSent() != 100_000-rep.Sent {
		t.Errorf("stopped %q, sent %d, not sent %d", rep.Stopped, rep.Sent, rep.NotSent())
	}
	if len(rep.Errors) != 0 || len(rep.WaitErrors) != 0 {
		t.Errorf("requests cut off by the stop counted as errors: %v %v", rep.Errors, rep.WaitErrors)
	}
	var b strings.Builder
	_ = rep.Print(&b)
	if !strings.Contains(b.String(), "stopped       interrupted after") {
		t.Errorf("report:\n%s", b.String())
	}
}

func TestRunFailsEarlyOnAWrongKey(t *testing.T) {
	f := newFakeAPI(t)
	srv := f.serve(t)
	cfg := testConfig(srv.URL)
	cfg.APIKey = "wrong"

	_, err := Run(t.Context(), cfg, nil)
	var re *RunError
	if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), "401 Unauthorized: missing or wrong API key") {
		t.Errorf("Run error = %v, want the 401 of setting stock", err)
	}
	f.mu.Lock()
	f.problems = nil // the wrong key is the point
	posts := f.posts
	f.mu.Unlock()
	if posts != 0 {
		t.Errorf("%d orders placed after the stock could not be set", posts)
	}
}

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.APIKey = "k"
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no key", func(c *Config) { c.APIKey = "" }},
		{"relative url", func(c *Config) { c.URL = "127.0.0.1:8080" }},
		{"url with query", func(c *Config) { c.URL = "http://127.0.0.1:8080/?x=1" }},
		{"ftp url", func(c *Config) { c.URL = "ftp://127.0.0.1" }},
		{"no orders", func(c *Config) { c.Orders = 0 }},
		{"too many orders", func(c *Config) { c.Orders = MaxOrders + 1 }},
		{"no concurrency", func(c *Config) { c.Concurrency = 0 }},
		{"too much concurrency", func(c *Config) { c.Concurrency = 1025 }},
		{"no skus", func(c *Config) { c.SKUs = 0 }},
		{"more items than skus", func(c *Config) { c.Items = 11 }},
		{"no items", func(c *Config) { c.Items = 0 }},
		{"too much stock", func(c *Config) { c.Stock = MaxStock + 1 }},
		{"no timeout", func(c *Config) { c.Timeout = 0 }},
	}
	for _, tt := range tests {
		c := ok
		tt.edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", tt.name, err)
		}
	}
}

func TestDefaultStock(t *testing.T) {
	tests := []struct {
		orders, items, skus int
		want                int64
	}{
		{2000, 1, 10, 320}, // 2000 orders * 2 units * 0.8 / 10
		{2000, 3, 10, 640}, // 2 SKUs of 2 units on average
		{1, 1, 10, 0},
		{5, 1, 2, 4},
	}
	for _, tt := range tests {
		if got := DefaultStock(tt.orders, tt.items, tt.skus); got != tt.want {
			t.Errorf("DefaultStock(%d, %d, %d) = %d, want %d", tt.orders, tt.items, tt.skus, got, tt.want)
		}
	}
}
