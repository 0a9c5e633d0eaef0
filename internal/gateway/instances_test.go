package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// instance is one instance of a fake service. Its /healthz always passes;
// its /readyz fails while unready is set, as a real instance's does while
// its database is down. Every other request it counts and answers with its
// name and the body it got.
type instance struct {
	name    string
	srv     *httptest.Server
	url     *url.URL
	unready atomic.Bool
	hits    atomic.Int64
}

func newInstance(t testing.TB, name string) *instance {
	t.Helper()
	in := &instance{name: name}
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			return
		case "/readyz":
			if in.unready.Load() {
				web.WriteProblem(w, http.StatusServiceUnavailable, "not ready: database down")
				return
			}
			web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
			return
		}
		in.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Instance", name)
		_, _ = w.Write(body)
	}))
	t.Cleanup(in.srv.Close)
	u, err := url.Parse(in.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	in.url = u
	return in
}

// upstream is the service made of ins.
func upstream(name string, ins ...*instance) Upstream {
	up := Upstream{Name: name, Timeout: 5 * time.Second}
	for _, in := range ins {
		up.URLs = append(up.URLs, in.url)
	}
	return up
}

// serveGateway serves a Gateway over real HTTP and, if run, runs its health
// checks; all of it stops before the test ends.
func serveGateway(t testing.TB, orders, inventory Upstream, run bool) (*Gateway, *httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	g, err := New(Config{APIKey: testKey, Orders: orders, Inventory: inventory}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if run {
		go func() { g.Run(ctx); close(done) }()
	} else {
		close(done)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
	})
	return g, srv, logs
}

// inRotation lists the order instances the gateway has in rotation.
func inRotation(g *Gateway) []string { return g.pools[0].Healthy() }

// waitFor polls cond until it holds or within has passed, and reports how
// long it took.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(begin)
}

// order sends an authorised request for /api/v1/orders with body and
// returns the answer and the instance that gave it.
func order(t testing.TB, gw *httptest.Server, body string) (resp *http.Response, got, from string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, gw.URL+"/api/v1/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err = gw.Client().Do(req)
	if err != nil {
		t.Fatalf("POST /api/v1/orders: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b), resp.Header.Get("X-Instance")
}

// wantServed fails unless n orders all succeed, and returns how many each
// instance served.
func wantServed(t testing.TB, gw *httptest.Server, n int) map[string]int {
	t.Helper()
	by := map[string]int{}
	for i := range n {
		body := `{"n":` + strings.Repeat("1", i+1) + `}`
		resp, got, from := order(t, gw, body)
		if resp.StatusCode != http.StatusOK || got != body {
			t.Fatalf("order %d: got %d %q from %q, want 200 echoing %q", i, resp.StatusCode, got, from, body)
		}
		by[from]++
	}
	return by
}

func TestSpreadsOverInstances(t *testing.T) {
	a, b := newInstance(t, "a"), newInstance(t, "b")
	inv := newInstance(t, "inv")
	_, gw, _ := serveGateway(t, upstream("order", a, b), upstream("inventory", inv), true)

	by := wantServed(t, gw, 20)
	// Requests one after another tie on load, and ties rotate.
	if by["a"] != 10 || by["b"] != 10 {
		t.Errorf("served a=%d b=%d, want 10 each", by["a"], by["b"])
	}
	if n := inv.hits.Load(); n != 0 {
		t.Errorf("inventory served %d orders, want 0", n)
	}
}

func TestUnreadyInstanceLeavesRotationAndReturns(t *testing.T) {
	a, b := newInstance(t, "a"), newInstance(t, "b")
	g, gw, logs := serveGateway(t, upstream("order", a, b), upstream("inventory", newInstance(t, "inv")), true)
	both := []string{a.url.String(), b.url.String()}

	a.unready.Store(true)
	took := waitFor(t, 1500*time.Millisecond, "unready instance leaves rotation", func() bool {
		return slices.Equal(inRotation(g), []string{b.url.String()})
	})
	t.Logf("unready instance left rotation after %v", took)
	before := a.hits.Load()
	if by := wantServed(t, gw, 10); by["b"] != 10 {
		t.Errorf("while a is unready: served %v, want all 10 by b", by)
	}
	if n := a.hits.Load() - before; n != 0 {
		t.Errorf("unready instance served %d requests, want 0", n)
	}
	if !strings.Contains(logs.String(), "order instance out of rotation") {
		t.Errorf("log: got %q, want a record that an order instance left rotation", logs.String())
	}

	a.unready.Store(false)
	took = waitFor(t, 1500*time.Millisecond, "ready instance returns to rotation", func() bool {
		return slices.Equal(inRotation(g), both)
	})
	t.Logf("ready instance returned after %v", took)
	if by := wantServed(t, gw, 10); by["a"] == 0 {
		t.Errorf("after a returned: served %v, want some by a", by)
	}
}

// TestRefusedConnectRetriedOnOtherInstance runs without health checks: they
// could take the killed instance out before a request meets its refusal,
// and only the retry is under test here.
func TestRefusedConnectRetriedOnOtherInstance(t *testing.T) {
	t.Run("never connected", func(t *testing.T) {
		a, b := newInstance(t, "a"), newInstance(t, "b")
		g, gw, _ := serveGateway(t, upstream("order", a, b), upstream("inventory", newInstance(t, "inv")), false)
		a.srv.Close()
		// Ties rotate, so one of the first two picks a; the retry must
		// resend the POST, body and all, to b.
		if by := wantServed(t, gw, 4); by["b"] != 4 {
			t.Errorf("served %v, want all 4 by b", by)
		}
		// The refusal, not a health check, is what took a out.
		if got, want := inRotation(g), []string{b.url.String()}; !slices.Equal(got, want) {
			t.Errorf("in rotation after a refused connection: %v, want %v", got, want)
		}
	})
	// A killed instance also leaves pooled connections behind. A GET sent
	// on one as it closes is resent by the Transport, whose new dial is
	// refused and retried on b. (A POST there may have reached the
	// instance, so it is not resent: see lb.TestCloseBackendUnderLoad.)
	t.Run("after serving", func(t *testing.T) {
		a, b := newInstance(t, "a"), newInstance(t, "b")
		g, gw, _ := serveGateway(t, upstream("order", a, b), upstream("inventory", newInstance(t, "inv")), false)
		get := func() string {
			t.Helper()
			resp, body := do(t, gw.Client(), authed(newRequest(t, "GET", gw.URL+"/api/v1/orders/1", nil)))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET: got %d %q, want 200", resp.StatusCode, body)
			}
			return resp.Header.Get("X-Instance")
		}
		if x, y := get(), get(); x == y {
			t.Fatalf("before the kill: both GETs served by %q, want one each", x)
		}
		a.srv.Close()
		for range 4 {
			if from := get(); from != "b" {
				t.Errorf("after a was killed: served by %q, want b", from)
			}
		}
		if got, want := inRotation(g), []string{b.url.String()}; !slices.Equal(got, want) {
			t.Errorf("in rotation after a was killed: %v, want %v", got, want)
		}
	})
}

func TestAllInstancesDown(t *testing.T) {
	a, b := newInstance(t, "a"), newInstance(t, "b")
	inv := newInstance(t, "inv")
	g, gw, logs := serveGateway(t, upstream("order", a, b), upstream("inventory", inv), true)

	a.unready.Store(true)
	b.srv.Close()
	waitFor(t, 1500*time.Millisecond, "every order instance leaves rotation", func() bool { return len(inRotation(g)) == 0 })

	before := a.hits.Load()
	start := time.Now()
	resp, body, _ := order(t, gw, `{}`)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("503 took %v, want it at once", d)
	}
	if p := checkProblem(t, resp, body, http.StatusServiceUnavailable); p.Detail != "order service unavailable" {
		t.Errorf("detail: got %q, want %q", p.Detail, "order service unavailable")
	}
	if n := a.hits.Load() - before; n != 0 {
		t.Errorf("unready instance served %d requests, want 0", n)
	}
	if !strings.Contains(logs.String(), "no healthy order instance") {
		t.Errorf("log: got %q, want the reason, no healthy order instance", logs.String())
	}

	// The other service is unaffected.
	resp, body = do(t, gw.Client(), authed(newRequest(t, "GET", gw.URL+"/api/v1/inventory", nil)))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Instance") != "inv" {
		t.Errorf("inventory: got %d %q, want 200 from inv", resp.StatusCode, body)
	}
}
