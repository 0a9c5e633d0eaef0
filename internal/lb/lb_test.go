package lb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// gateway stands in for a gateway instance: it answers its health check and
// echoes every other request's body, naming itself in X-Backend.
type gateway struct {
	name string
	hits atomic.Int64
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.WriteHeader(http.StatusOK)
		return
	}
	g.hits.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Backend", g.name)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Got-Forwarded-For", r.Header.Get("X-Forwarded-For"))
	_, _ = w.Write(body)
}

// serve runs h on addr ("127.0.0.1:0" for any port) until the test ends or
// the returned server is closed.
func serve(t testing.TB, addr string, h http.Handler) (*http.Server, *url.URL) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// refusing returns the URL of an address nothing listens on.
func refusing(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	_ = ln.Close()
	return u
}

// start serves a Balancer for cfg and, if run, runs its health checks; all
// of it stops before the test ends.
func start(t *testing.T, cfg Config, run bool) (*Balancer, *httptest.Server) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	if run {
		go func() { b.Run(ctx); close(done) }()
	} else {
		close(done)
	}
	front := httptest.NewServer(b)
	t.Cleanup(func() {
		front.Close()
		cancel()
		<-done
	})
	return b, front
}

// waitFor polls cond until it holds or within has passed, and reports how
// long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
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

func wantProblem(t *testing.T, resp *http.Response, status int, detail string) {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", got)
	}
	var p web.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("decoding problem: %v", err)
	}
	if p.Status != status {
		t.Errorf("problem status = %d, want %d", p.Status, status)
	}
	if detail != "" && p.Detail != detail {
		t.Errorf("problem detail = %q, want %q", p.Detail, detail)
	}
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestNew(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:1")
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{Backends: []*url.URL{u}}, false},
		{"round-robin", Config{Backends: []*url.URL{u}, Policy: "round-robin"}, false},
		{"no backends", Config{}, true},
		{"unknown policy", Config{Backends: []*url.URL{u}, Policy: "random"}, true},
		{"relative backend", Config{Backends: []*url.URL{{Path: "/x"}}}, true},
		{"nil backend", Config{Backends: []*url.URL{nil}}, true},
		{"relative health path", Config{Backends: []*url.URL{u}, HealthPath: "healthz"}, true},
		{"negative fail count", Config{Backends: []*url.URL{u}, FailAfter: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("New error = %v, want error: %v", err, tt.wantErr)
			}
		})
	}

	b, err := New(Config{Backends: []*url.URL{u}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := b.pool.cfg
	if got.Policy != "least-loaded" || got.HealthPath != "/healthz" || got.HealthInterval != 500*time.Millisecond ||
		got.HealthTimeout != 2*time.Second || got.FailAfter != 2 {
		t.Errorf("defaults = %+v, want least-loaded, /healthz, 500ms, 400ms, 2", got)
	}
	if got, want := b.Healthy(), []string{"http://127.0.0.1:1"}; !slices.Equal(got, want) {
		t.Errorf("Healthy() = %v, want %v", got, want)
	}
}

func TestProxyAndOwnEndpoints(t *testing.T) {
	g := &gateway{name: "g"}
	_, gu := serve(t, "127.0.0.1:0", g)
	gu.Path = "/base"
	_, front := start(t, Config{Backends: []*url.URL{gu}}, true)
	c := front.Client()

	resp := get(t, c, front.URL+"/v1/things?x=1")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("proxied status = %d, want 200; body %s", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("X-Path"), "/base/v1/things?x=1"; got != want {
		t.Errorf("backend saw path %q, want %q", got, want)
	}
	if got, want := resp.Header.Get("X-Got-Forwarded-For"), "127.0.0.1"; got != want {
		t.Errorf("X-Forwarded-For = %q, want %q", got, want)
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		resp := get(t, c, front.URL+path)
		var got map[string]string
		err := json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || got["status"] != "ok" {
			t.Errorf("GET %s = %d %v (err %v), want 200 {status: ok}", path, resp.StatusCode, got, err)
		}
	}
	if n := g.hits.Load(); n != 1 {
		t.Errorf("backend served %d proxied requests, want 1 (the LB answers /healthz and /readyz itself)", n)
	}

	resp, err := c.Post(front.URL+"/readyz", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow = %q, want %q", got, "GET, HEAD")
	}
	wantProblem(t, resp, http.StatusMethodNotAllowed, "")
}

func TestAllBackendsDown(t *testing.T) {
	b, front := start(t, Config{Backends: []*url.URL{refusing(t), refusing(t)}}, true)
	c := front.Client()
	waitFor(t, 2*time.Second, "all backends out of rotation", func() bool { return len(b.Healthy()) == 0 })

	began := time.Now()
	wantProblem(t, get(t, c, front.URL+"/v1/things"), http.StatusServiceUnavailable, "no healthy gateway instance")
	if d := time.Since(began); d > 200*time.Millisecond {
		t.Errorf("503 took %v, want it at once", d)
	}
	wantProblem(t, get(t, c, front.URL+"/readyz"), http.StatusServiceUnavailable, "no healthy gateway instance")
	resp := get(t, c, front.URL+"/healthz")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200 while the LB itself is fine", resp.StatusCode)
	}
}

func TestBackendLeavesAndReturns(t *testing.T) {
	x := &gateway{name: "x"}
	y := &gateway{name: "y"}
	xs, xu := serve(t, "127.0.0.1:0", x)
	_, yu := serve(t, "127.0.0.1:0", y)
	b, front := start(t, Config{Backends: []*url.URL{xu, yu}}, true)
	both := []string{xu.String(), yu.String()}
	if got := b.Healthy(); !slices.Equal(got, both) {
		t.Fatalf("Healthy() at start = %v, want %v", got, both)
	}

	_ = xs.Close()
	took := waitFor(t, 2*time.Second, "closed backend leaves rotation", func() bool {
		return slices.Equal(b.Healthy(), []string{yu.String()})
	})
	t.Logf("closed backend left rotation after %v", took)

	resp := get(t, front.Client(), front.URL+"/v1/things")
	resp.Body.Close()
	if got := resp.Header.Get("X-Backend"); resp.StatusCode != http.StatusOK || got != "y" {
		t.Errorf("while x is down: status %d from %q, want 200 from y", resp.StatusCode, got)
	}

	serve(t, xu.Host, x)
	took = waitFor(t, 2*time.Second, "revived backend returns to rotation", func() bool {
		return slices.Equal(b.Healthy(), both)
	})
	t.Logf("revived backend returned after %v", took)
}

func TestUnhealthyStatusTakesBackendOut(t *testing.T) {
	var sick atomic.Bool
	_, gu := serve(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sick.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	b, _ := start(t, Config{Backends: []*url.URL{gu}, HealthInterval: 50 * time.Millisecond}, true)
	sick.Store(true)
	waitFor(t, time.Second, "backend answering 500 leaves rotation", func() bool { return len(b.Healthy()) == 0 })
	sick.Store(false)
	waitFor(t, time.Second, "backend answering 200 returns", func() bool { return len(b.Healthy()) == 1 })
}

func TestRetryOnRefusedConnect(t *testing.T) {
	small := bytes.Repeat([]byte("converge "), 10_000)
	tests := []struct {
		name   string
		method string
		body   []byte
		// chunked hides the length, as a streaming client would.
		chunked bool
	}{
		{"GET", http.MethodGet, nil, false},
		{"POST", http.MethodPost, small, false},
		{"POST chunked", http.MethodPost, small, true},
		{"POST at the limit", http.MethodPost, bytes.Repeat([]byte("x"), web.MaxBody), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := &gateway{name: "live"}
			_, lu := serve(t, "127.0.0.1:0", live)
			dead := refusing(t)
			// Round-robin without health checks: the first request goes
			// to the dead backend, which only the retry can save.
			b, front := start(t, Config{Backends: []*url.URL{dead, lu}, Policy: "round-robin"}, false)

			var body io.Reader
			if tt.body != nil {
				body = bytes.NewReader(tt.body)
				if tt.chunked {
					body = io.MultiReader(body)
				}
			}
			req, err := http.NewRequest(tt.method, front.URL+"/v1/things", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "live" {
				t.Fatalf("status %d from %q, want 200 from live", resp.StatusCode, resp.Header.Get("X-Backend"))
			}
			if !bytes.Equal(got, tt.body) {
				t.Errorf("backend got %d body bytes, want the %d sent", len(got), len(tt.body))
			}
			if got, want := b.Healthy(), []string{lu.String()}; !slices.Equal(got, want) {
				t.Errorf("Healthy() after refused connect = %v, want %v", got, want)
			}
			for i, be := range b.pool.backends {
				if n := be.inflight.Load(); n != 0 {
					t.Errorf("backend %d has %d requests in flight after the request, want 0", i, n)
				}
			}
		})
	}
}

func TestLargeBodyNotRetried(t *testing.T) {
	live := &gateway{name: "live"}
	_, lu := serve(t, "127.0.0.1:0", live)
	b, front := start(t, Config{Backends: []*url.URL{refusing(t), lu}, Policy: "round-robin"}, false)
	large := bytes.Repeat([]byte("y"), web.MaxBody+1)

	resp, err := front.Client().Post(front.URL+"/v1/things", "application/octet-stream", bytes.NewReader(large))
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, resp, http.StatusBadGateway, "")
	if n := live.hits.Load(); n != 0 {
		t.Errorf("live backend served %d requests, want 0: a body too large to keep must not be resent", n)
	}

	// The refused backend is out now, so the body streams to the live one.
	resp, err = front.Client().Post(front.URL+"/v1/things", "application/octet-stream", io.MultiReader(bytes.NewReader(large)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, large) {
		t.Errorf("second request: status %d, %d bytes echoed, want 200 and %d bytes", resp.StatusCode, len(got), len(large))
	}
	if got, want := b.Healthy(), []string{lu.String()}; !slices.Equal(got, want) {
		t.Errorf("Healthy() = %v, want %v", got, want)
	}
}

func TestNoRetryAfterConnect(t *testing.T) {
	// This instance takes the request and drops the connection: it may
	// have acted on it, so the request must not go anywhere else.
	_, hu := serve(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		_, _ = io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	}))
	other := &gateway{name: "other"}
	_, ou := serve(t, "127.0.0.1:0", other)
	b, front := start(t, Config{Backends: []*url.URL{hu, ou}, Policy: "round-robin"}, false)

	resp, err := front.Client().Post(front.URL+"/v1/payments", "application/json", strings.NewReader(`{"amount":1}`))
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, resp, http.StatusBadGateway, "the gateway instance did not answer")
	if n := other.hits.Load(); n != 0 {
		t.Errorf("other backend got %d requests, want 0", n)
	}
	if got := len(b.Healthy()); got != 2 {
		t.Errorf("%d backends in rotation, want 2: a dropped response is not a refused connection", got)
	}
}

// TestCloseBackendUnderLoad drains one of two backends while eight clients
// keep sending GETs (without a body, as gateway reads are) and POSTs.
//
// A new connection to the drained backend is refused and retried elsewhere,
// and a GET on a pooled connection the backend has just closed is resent by
// the Transport, so no GET may fail. A POST written onto such a connection
// at the moment it closes may have been applied, so nobody may resend it; it
// is the one failure allowed, and only before the backend left rotation.
func TestCloseBackendUnderLoad(t *testing.T) {
	gs := []*gateway{{name: "a"}, {name: "b"}}
	as, au := serve(t, "127.0.0.1:0", gs[0])
	_, bu := serve(t, "127.0.0.1:0", gs[1])
	b, front := start(t, Config{Backends: []*url.URL{au, bu}}, true)
	c := front.Client()

	type failure struct {
		began  time.Time
		method string
		err    string
	}
	var (
		mu       sync.Mutex
		failures []failure
		served   atomic.Int64
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				path := fmt.Sprintf("/v1/things?worker=%d&n=%d", w, i)
				method, body := http.MethodGet, ""
				if i%2 == 1 {
					method, body = http.MethodPost, path
				}
				req, err := http.NewRequest(method, front.URL+path, strings.NewReader(body))
				if err != nil {
					panic(err)
				}
				began := time.Now()
				resp, err := c.Do(req)
				if err == nil {
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK && string(got) == body && resp.Header.Get("X-Path") == path {
						served.Add(1)
						continue
					}
					err = fmt.Errorf("status %d path %q body %q", resp.StatusCode, resp.Header.Get("X-Path"), got)
				}
				mu.Lock()
				failures = append(failures, failure{began, method, err.Error()})
				mu.Unlock()
			}
		})
	}

	time.Sleep(300 * time.Millisecond)
	// Shutdown, as a gateway instance draining for a deploy would: it
	// stops accepting, closes idle connections and finishes the rest.
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = as.Shutdown(shutCtx)
	shutCancel()
	waitFor(t, 2*time.Second, "closed backend leaves rotation", func() bool {
		return slices.Equal(b.Healthy(), []string{bu.String()})
	})
	out := time.Now()
	before := gs[1].hits.Load()
	time.Sleep(time.Second)
	cancel()
	wg.Wait()

	t.Logf("%d requests served; a got %d, b got %d (%d after a left rotation); %d failed",
		served.Load(), gs[0].hits.Load(), gs[1].hits.Load(), gs[1].hits.Load()-before, len(failures))
	if gs[0].hits.Load() == 0 || gs[1].hits.Load()-before == 0 {
		t.Errorf("a got %d, b got %d after a left: want both to have carried load", gs[0].hits.Load(), gs[1].hits.Load()-before)
	}
	for _, f := range failures {
		switch {
		case f.method == http.MethodGet:
			t.Errorf("GET failed (began %v before a left rotation): %s", out.Sub(f.began), f.err)
		case f.began.After(out):
			t.Errorf("POST failed %v after a left rotation: %s", f.began.Sub(out), f.err)
		default:
			t.Logf("POST failed while a closed (allowed: it may have been applied): %s", f.err)
		}
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		g := &gateway{name: "g"}
		gsrv, gu := serve(t, "127.0.0.1:0", g)
		dead := refusing(t)
		log := slog.New(slog.NewTextHandler(t.Output(), nil))
		b, err := New(Config{Backends: []*url.URL{dead, gu}, Policy: "round-robin"}, log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { b.Run(ctx); close(done) }()
		front := httptest.NewServer(b)
		for range 5 {
			resp := get(t, front.Client(), front.URL+"/v1/things")
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(600 * time.Millisecond) // let a round of checks run

		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("Run did not return within 1s of its context being cancelled")
		}
		front.Close()
		_ = gsrv.Close()
	}()

	deadline := time.Now().Add(3 * time.Second)
	for {
		now := runtime.NumGoroutine()
		if now <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after, want at most %d\n%s", before, now, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Bodies larger than the proxy's copy buffers, many at once, each come
// back whole and unmixed: the buffers the proxy lends and takes back are
// never in two responses at a time.
func TestConcurrentLargeBodies(t *testing.T) {
	_, gu := serve(t, "127.0.0.1:0", &gateway{name: "g"})
	_, front := start(t, Config{Backends: []*url.URL{gu}}, true)
	c := front.Client()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 20 {
				want := bytes.Repeat([]byte(fmt.Sprintf("%02d-%02d|", w, i)), 100<<10/6) // ~100 KiB, 3 copy buffers
				resp, err := c.Post(front.URL+"/echo", "application/octet-stream", bytes.NewReader(want))
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
					t.Errorf("worker %d request %d: status %d, %d bytes back (err %v), want 200 and the %d bytes sent", w, i, resp.StatusCode, len(got), err, len(want))
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkProxy is one small request through the balancer to an instance
// that answers at once: the load balancer's and a gateway's cost per hop.
func BenchmarkProxy(b *testing.B) {
	_, gu := serve(b, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"PENDING"}`))
	}))
	log := slog.New(slog.DiscardHandler)
	bal, err := New(Config{Backends: []*url.URL{gu}}, log)
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(bal)
	b.Cleanup(front.Close)
	c := front.Client()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get(front.URL + "/api/v1/orders/x")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
