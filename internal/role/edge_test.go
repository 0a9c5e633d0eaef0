package role

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// fakeOrder is an order instance whose /readyz answers 503 while unready is
// set; every other request it answers 200, naming itself.
func fakeOrder(t testing.TB, name string, unready bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if unready {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		hits.Add(1)
		w.Header().Set("X-Instance", name)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestGatewayBalancesOverEveryURL starts a gateway on two order URLs, one of
// them unready: only health checks the gateway runs itself can take that one
// out, and only passing every URL lets the other one serve.
func TestGatewayBalancesOverEveryURL(t *testing.T) {
	unready, unreadyHits := fakeOrder(t, "unready", true)
	ready, _ := fakeOrder(t, "ready", false)
	inventory, _ := fakeOrder(t, "inventory", false)
	const key = "k"
	e, err := StartGateway(context.Background(), GatewayConfig{
		Addr:          "127.0.0.1:0",
		APIKey:        key,
		OrderURLs:     unready.URL + ", " + ready.URL,
		InventoryURLs: inventory.URL,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Shutdown again is harmless; this one stops the checks when the
	// test fails before its own.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})

	get := func() string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, e.URL()+"/api/v1/orders/1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: status %d, want 200", resp.StatusCode)
		}
		return resp.Header.Get("X-Instance")
	}
	// The unready instance leaves rotation after two failed checks, one
	// every 500ms; from then on the ready one serves everything.
	deadline := time.Now().Add(2 * time.Second)
	for streak := 0; streak < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("the ready order instance did not serve 10 requests in a row within 2s")
		}
		if get() == "ready" {
			streak++
		} else {
			streak = 0
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := unreadyHits.Load()
	for range 10 {
		get()
	}
	if n := unreadyHits.Load() - before; n != 0 {
		t.Errorf("unready instance served %d requests, want 0", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return: the health checks did not stop")
	}
}

// TestLBServesOnTheListenerItIsGiven: converge dev binds the load balancer's
// address first and holds it while the rest starts; the load balancer must
// serve on that listener, not bind the address again (which the held
// listener makes fail, and which, for a :0 address released in between,
// another part of the process could have taken).
func TestLBServesOnTheListenerItIsGiven(t *testing.T) {
	gw, _ := fakeOrder(t, "gateway", false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := StartLB(context.Background(), LBConfig{Addr: ln.Addr().String(), Listener: ln, Gateways: gw.URL, Policy: "round-robin"}, nil)
	if err != nil {
		ln.Close()
		t.Fatalf("StartLB on a held listener: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if conn, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Shutdown: the listener was not closed", ln.Addr())
		}
	})
	if want := "http://" + ln.Addr().String(); e.URL() != want {
		t.Errorf("URL() = %s, want %s", e.URL(), want)
	}
	resp, err := http.Get(e.URL() + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Instance"); got != "gateway" {
		t.Errorf("answered by %q, want the gateway behind the load balancer", got)
	}
}
