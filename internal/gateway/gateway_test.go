package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/web"
)

const (
	testKey      = "s3cret-key"
	testAdminKey = "adm1n-key"
)

// seen is what a fake service was sent.
type seen struct {
	method  string
	uri     string
	header  http.Header
	bodyLen int64
}

// service is a fake upstream that records each request it is sent.
type service struct {
	name string
	srv  *httptest.Server

	mu   sync.Mutex
	reqs []seen
}

// newService starts a fake upstream. It reads the whole body, echoes the
// request id back like real services do, and names itself in the body; a
// non-nil handle replaces that answer.
func newService(t *testing.T, name string, handle http.HandlerFunc) *service {
	t.Helper()
	s := &service{name: name}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, seen{method: r.Method, uri: r.URL.RequestURI(), header: r.Header.Clone(), bodyLen: n})
		s.mu.Unlock()
		if handle != nil {
			handle(w, r)
			return
		}
		w.Header().Set(requestIDHeader, r.Header.Get(requestIDHeader))
		io.WriteString(w, name)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *service) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

func (s *service) upstream(t *testing.T, timeout time.Duration) Upstream {
	t.Helper()
	return Upstream{Name: s.name, URLs: []*url.URL{mustParse(t, s.srv.URL)}, Timeout: timeout}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// syncBuffer lets the test read what the gateway's goroutines logged.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startGateway serves a Gateway over real HTTP.
func startGateway(t *testing.T, orders, inventory Upstream) (*httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	g, err := New(Config{APIKey: testKey, AdminKey: testAdminKey, Orders: orders, Inventory: inventory}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv, logs
}

// standard is a gateway in front of two healthy fake services.
func standard(t *testing.T) (gw *httptest.Server, orders, inventory *service) {
	t.Helper()
	orders = newService(t, "order", nil)
	inventory = newService(t, "inventory", nil)
	gw, _ = startGateway(t, orders.upstream(t, 5*time.Second), inventory.upstream(t, 5*time.Second))
	return gw, orders, inventory
}

func newRequest(t *testing.T, method, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func authed(r *http.Request) *http.Request {
	r.Header.Set("Authorization", "Bearer "+testKey)
	return r
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, string(body)
}

// checkProblem fails unless resp is a problem+json answer with status want,
// and returns the problem.
func checkProblem(t *testing.T, resp *http.Response, body string, want int) web.Problem {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("status: got %d, want %d (body %q)", resp.StatusCode, want, body)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type: got %q, want %q", got, "application/problem+json")
	}
	var p web.Problem
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("body %q is not a problem: %v", body, err)
	}
	if p.Status != want {
		t.Errorf("problem status: got %d, want %d", p.Status, want)
	}
	return p
}

func TestRouting(t *testing.T) {
	gw, orders, inventory := standard(t)
	tests := []struct {
		method, uri string
		want        string // service that must get the request; "" for none
		status      int
	}{
		{"GET", "/api/v1/orders", "order", 200},
		{"POST", "/api/v1/orders", "order", 200},
		{"GET", "/api/v1/orders/42?wait=30s", "order", 200},
		{"DELETE", "/api/v1/orders/42/lines/7?a=1&b=x%20y", "order", 200},
		{"GET", "/api/v1/inventory", "inventory", 200},
		{"PUT", "/api/v1/inventory/sku-9?reserve=3", "inventory", 200},
		{"GET", "/api/v1/ordersx", "", 404},
		{"GET", "/api/v1/unknown", "", 404},
		{"GET", "/api/v2/orders", "", 404},
		{"GET", "/", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.uri, func(t *testing.T) {
			before := map[string]int{"order": len(orders.requests()), "inventory": len(inventory.requests())}
			resp, body := do(t, gw.Client(), authed(newRequest(t, tt.method, gw.URL+tt.uri, nil)))
			if tt.status != 200 {
				checkProblem(t, resp, body, tt.status)
			} else if resp.StatusCode != 200 || body != tt.want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
			for _, s := range []*service{orders, inventory} {
				reqs := s.requests()[before[s.name]:]
				if s.name != tt.want {
					if len(reqs) != 0 {
						t.Errorf("%s service got %d requests, want none", s.name, len(reqs))
					}
					continue
				}
				if len(reqs) != 1 {
					t.Fatalf("%s service got %d requests, want 1", s.name, len(reqs))
				}
				if reqs[0].method != tt.method || reqs[0].uri != tt.uri {
					t.Errorf("%s service got %s %s, want %s %s", s.name, reqs[0].method, reqs[0].uri, tt.method, tt.uri)
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	gw, orders, inventory := standard(t)
	for _, tt := range []struct{ path, want string }{
		{"/healthz", "ok"},
		{"/readyz", "ready"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			// No key: a load balancer's probe has none.
			resp, body := do(t, gw.Client(), newRequest(t, "GET", gw.URL+tt.path, nil))
			var got struct{ Status string }
			if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 200 || got.Status != tt.want {
				t.Errorf("got %d %q (%v), want 200 with status %q", resp.StatusCode, body, err, tt.want)
			}
			resp, body = do(t, gw.Client(), newRequest(t, "POST", gw.URL+tt.path, nil))
			checkProblem(t, resp, body, http.StatusMethodNotAllowed)
		})
	}
	if n := len(orders.requests()) + len(inventory.requests()); n != 0 {
		t.Errorf("services got %d requests, want none", n)
	}
}

func TestAuth(t *testing.T) {
	gw, orders, _ := standard(t)
	tests := []struct {
		name   string
		header string // "" sends no Authorization header
		status int
	}{
		{"missing", "", 401},
		{"basic scheme", "Basic " + testKey, 401},
		{"no scheme", testKey, 401},
		{"empty token", "Bearer ", 401},
		{"wrong key", "Bearer wrong", 401},
		{"key prefix", "Bearer " + testKey[:len(testKey)-1], 401},
		{"key with suffix", "Bearer " + testKey + "x", 401},
		{"right key", "Bearer " + testKey, 200},
		{"lower-case scheme", "bearer " + testKey, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(orders.requests())
			req := newRequest(t, "GET", gw.URL+"/api/v1/orders/1", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, body := do(t, gw.Client(), req)
			reqs := orders.requests()[before:]
			if tt.status == 401 {
				checkProblem(t, resp, body, 401)
				if got := resp.Header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate: got %q, want %q", got, "Bearer")
				}
				if len(reqs) != 0 {
					t.Errorf("order service got %d requests, want none", len(reqs))
				}
				return
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if len(reqs) != 1 {
				t.Fatalf("order service got %d requests, want 1", len(reqs))
			}
			if got := reqs[0].header.Values("Authorization"); len(got) != 0 {
				t.Errorf("order service saw Authorization %q, want none", got)
			}
		})
	}
}

// The admin API goes to the order service with the admin key only: the
// API key is known there but refused (403), anything else is 401, and
// neither key opens the other's routes.
func TestAdminAuth(t *testing.T) {
	gw, orders, inventory := standard(t)
	tests := []struct {
		name, path, header string
		status             int
	}{
		{"admin key", "/api/v1/admin/dead-letters?consumer=x", "Bearer " + testAdminKey, 200},
		{"admin key, any admin path", "/api/v1/admin/whatever", "Bearer " + testAdminKey, 200},
		{"API key", "/api/v1/admin/dead-letters", "Bearer " + testKey, 403},
		{"no key", "/api/v1/admin/dead-letters", "", 401},
		{"wrong key", "/api/v1/admin/dead-letters", "Bearer nope", 401},
		{"admin key prefix", "/api/v1/admin/dead-letters", "Bearer " + testAdminKey[:3], 401},
		{"admin key on the API", "/api/v1/orders", "Bearer " + testAdminKey, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(orders.requests())
			req := newRequest(t, "GET", gw.URL+tt.path, nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, body := do(t, gw.Client(), req)
			reqs := orders.requests()[before:]
			if tt.status != 200 {
				checkProblem(t, resp, body, tt.status)
				if len(reqs) != 0 {
					t.Errorf("order service got %d requests, want none", len(reqs))
				}
				return
			}
			if resp.StatusCode != 200 || body != "order" || len(reqs) != 1 {
				t.Fatalf("got %d %q and %d requests to the order service, want 200 from it", resp.StatusCode, body, len(reqs))
			}
			if reqs[0].uri != tt.path || len(reqs[0].header.Values("Authorization")) != 0 {
				t.Errorf("order service got %s with Authorization %q, want %s without", reqs[0].uri, reqs[0].header.Values("Authorization"), tt.path)
			}
		})
	}
	if n := len(inventory.requests()); n != 0 {
		t.Errorf("inventory service got %d requests, want none", n)
	}
}

// Without an admin key the admin API is off, for every key.
func TestAdminOff(t *testing.T) {
	orders := newService(t, "order", nil)
	g, err := New(Config{APIKey: testKey, Orders: orders.upstream(t, time.Second), Inventory: orders.upstream(t, time.Second)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	defer srv.Close()
	for _, header := range []string{"", "Bearer " + testKey, "Bearer " + testAdminKey} {
		req := newRequest(t, "GET", srv.URL+"/api/v1/admin/dead-letters", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, body := do(t, srv.Client(), req)
		checkProblem(t, resp, body, http.StatusForbidden)
	}
	if n := len(orders.requests()); n != 0 {
		t.Errorf("order service got %d requests, want none", n)
	}
}

// chunked hides a reader's length, so the client sends it chunked.
type chunked struct{ io.Reader }

func TestBodyLimit(t *testing.T) {
	gw, orders, _ := standard(t)
	t.Run("at the limit", func(t *testing.T) {
		before := len(orders.requests())
		resp, body := do(t, gw.Client(), authed(newRequest(t, "POST", gw.URL+"/api/v1/orders", bytes.NewReader(make([]byte, web.MaxBody)))))
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200 (body %q)", resp.StatusCode, body)
		}
		reqs := orders.requests()[before:]
		if len(reqs) != 1 || reqs[0].bodyLen != web.MaxBody {
			t.Errorf("order service got %+v, want one request with a %d-byte body", reqs, web.MaxBody)
		}
	})
	t.Run("content-length over the limit", func(t *testing.T) {
		before := len(orders.requests())
		req := authed(newRequest(t, "POST", gw.URL+"/api/v1/orders", bytes.NewReader(make([]byte, web.MaxBody+1))))
		resp, body := do(t, gw.Client(), req)
		checkProblem(t, resp, body, http.StatusRequestEntityTooLarge)
		if n := len(orders.requests()) - before; n != 0 {
			t.Errorf("order service got %d requests, want none", n)
		}
	})
	t.Run("chunked over the limit", func(t *testing.T) {
		req := authed(newRequest(t, "POST", gw.URL+"/api/v1/orders", chunked{bytes.NewReader(make([]byte, 2*web.MaxBody))}))
		req.ContentLength = -1
		resp, body := do(t, gw.Client(), req)
		checkProblem(t, resp, body, http.StatusRequestEntityTooLarge)
	})
}

func TestRequestID(t *testing.T) {
	gw, orders, _ := standard(t)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name  string
		given string // "" sends none
		keep  bool
	}{
		{"absent", "", false},
		{"simple", "req-123", true},
		{"uuid", "0b0e6f1c-2f5e-4e8a-9a57-0c7b9a1d2e3f", true},
		{"128 chars", long, true},
		{"129 chars", long + "a", false},
		{"space", "req 123", false},
		{"non-ASCII", "réq", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(orders.requests())
			req := authed(newRequest(t, "GET", gw.URL+"/api/v1/orders/1", nil))
			if tt.given != "" {
				req.Header.Set(requestIDHeader, tt.given)
			}
			resp, body := do(t, gw.Client(), req)
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d, want 200 (body %q)", resp.StatusCode, body)
			}
			// The fake service echoes the id: the client must still see one.
			ids := resp.Header.Values(requestIDHeader)
			if len(ids) != 1 {
				t.Fatalf("response %s: got %q, want exactly one", requestIDHeader, ids)
			}
			id := ids[0]
			if tt.keep && id != tt.given {
				t.Errorf("response id: got %q, want %q", id, tt.given)
			}
			if !tt.keep && (id == tt.given || !validRequestID(id)) {
				t.Errorf("response id: got %q, want a fresh valid id (given %q)", id, tt.given)
			}
			reqs := orders.requests()[before:]
			if len(reqs) != 1 {
				t.Fatalf("order service got %d requests, want 1", len(reqs))
			}
			if got := reqs[0].header.Values(requestIDHeader); len(got) != 1 || got[0] != id {
				t.Errorf("upstream id: got %q, want [%q]", got, id)
			}
		})
	}

	t.Run("fresh per request", func(t *testing.T) {
		a, _ := do(t, gw.Client(), newRequest(t, "GET", gw.URL+"/healthz", nil))
		b, _ := do(t, gw.Client(), newRequest(t, "GET", gw.URL+"/healthz", nil))
		if ida, idb := a.Header.Get(requestIDHeader), b.Header.Get(requestIDHeader); ida == "" || ida == idb {
			t.Errorf("ids: got %q and %q, want two different non-empty ids", ida, idb)
		}
	})

	t.Run("on error responses", func(t *testing.T) {
		for _, req := range []*http.Request{
			newRequest(t, "GET", gw.URL+"/api/v1/orders", nil),       // 401
			authed(newRequest(t, "GET", gw.URL+"/api/v1/nope", nil)), // 404
		} {
			req.Header.Set(requestIDHeader, "err-id")
			resp, _ := do(t, gw.Client(), req)
			if got := resp.Header.Get(requestIDHeader); got != "err-id" {
				t.Errorf("%s: %d response id: got %q, want %q", req.URL.Path, resp.StatusCode, got, "err-id")
			}
		}
	})

	// curl sends Expect: 100-continue for large bodies; the proxy passes
	// the service's 100 Continue on, and with it used to clear the headers
	// the gateway had set.
	t.Run("after 100 Continue", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
		defer client.CloseIdleConnections()
		req := authed(newRequest(t, "POST", gw.URL+"/api/v1/orders", strings.NewReader(`{"customer_id":"c"}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Expect", "100-continue")
		req.Header.Set(requestIDHeader, "expect-id")
		resp, body := do(t, client, req)
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200 (body %q)", resp.StatusCode, body)
		}
		if got := resp.Header.Values(requestIDHeader); len(got) != 1 || got[0] != "expect-id" {
			t.Errorf("response id: got %q, want [expect-id]", got)
		}
	})
}

func TestForwardedHeaders(t *testing.T) {
	gw, orders, _ := standard(t)
	const (
		traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	)
	req := authed(newRequest(t, "GET", gw.URL+"/api/v1/orders", nil))
	req.Header.Set("traceparent", traceparent)
	req.Header.Set("tracestate", tracestate)
	req.Header.Set("X-Forwarded-For", "203.0.113.9") // a caller must not choose its own address
	resp, body := do(t, gw.Client(), req)
	if resp.StatusCode != 200 {
		t.Fatalf("status: got %d, want 200 (body %q)", resp.StatusCode, body)
	}
	reqs := orders.requests()
	if len(reqs) != 1 {
		t.Fatalf("order service got %d requests, want 1", len(reqs))
	}
	h := reqs[0].header
	for name, want := range map[string]string{
		"Traceparent":       traceparent,
		"Tracestate":        tracestate,
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Host":  strings.TrimPrefix(gw.URL, "http://"),
		"X-Forwarded-Proto": "http",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("upstream %s: got %q, want %q", name, got, want)
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String()
	ln.Close()
	inventory := newService(t, "inventory", nil)
	// A long timeout, as orders really have, must not delay the answer.
	gw, logs := startGateway(t,
		Upstream{Name: "order", URLs: []*url.URL{mustParse(t, downURL)}, Timeout: 35 * time.Second},
		inventory.upstream(t, 5*time.Second))

	req := authed(newRequest(t, "GET", gw.URL+"/api/v1/orders/1", nil))
	req.Header.Set(requestIDHeader, "down-id")
	start := time.Now()
	resp, body := do(t, gw.Client(), req)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("answer took %s, want well under 2s", elapsed)
	}
	p := checkProblem(t, resp, body, http.StatusServiceUnavailable)
	if want := "order service unavailable"; p.Detail != want {
		t.Errorf("detail: got %q, want %q", p.Detail, want)
	}
	if got := resp.Header.Get(requestIDHeader); got != "down-id" {
		t.Errorf("response id: got %q, want %q", got, "down-id")
	}
	if got := logs.String(); !strings.Contains(got, `"request_id":"down-id"`) || !strings.Contains(got, `"upstream":"order"`) {
		t.Errorf("log: got %q, want a record with the request id and upstream", got)
	}

	// The healthy upstream is unaffected.
	resp, body = do(t, gw.Client(), authed(newRequest(t, "GET", gw.URL+"/api/v1/inventory", nil)))
	if resp.StatusCode != 200 {
		t.Errorf("inventory status: got %d, want 200 (body %q)", resp.StatusCode, body)
	}
}

func TestUpstreamFailures(t *testing.T) {
	// hijacked answers a request on the raw connection, below HTTP.
	hijacked := func(raw string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			buf.WriteString(raw)
			buf.Flush()
		}
	}
	tests := []struct {
		name   string
		handle http.HandlerFunc
		status int
		detail string
	}{
		{"connection dropped", hijacked(""), http.StatusServiceUnavailable, "order service unavailable"},
		{"not HTTP", hijacked("SSH-2.0-OpenSSH\r\n\r\n"), http.StatusBadGateway, "order service sent an invalid response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orders := newService(t, "order", tt.handle)
			inventory := newService(t, "inventory", nil)
			gw, _ := startGateway(t, orders.upstream(t, 5*time.Second), inventory.upstream(t, 5*time.Second))
			resp, body := do(t, gw.Client(), authed(newRequest(t, "POST", gw.URL+"/api/v1/orders", strings.NewReader(`{}`))))
			if p := checkProblem(t, resp, body, tt.status); p.Detail != tt.detail {
				t.Errorf("detail: got %q, want %q", p.Detail, tt.detail)
			}
		})
	}
}

func TestUpstreamTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	slow := newService(t, "order", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	inventory := newService(t, "inventory", nil)
	gw, logs := startGateway(t, slow.upstream(t, timeout), inventory.upstream(t, 5*time.Second))

	start := time.Now()
	resp, body := do(t, gw.Client(), authed(newRequest(t, "GET", gw.URL+"/api/v1/orders/1?wait=30s", nil)))
	elapsed := time.Since(start)
	p := checkProblem(t, resp, body, http.StatusGatewayTimeout)
	if !strings.Contains(p.Detail, "order service") {
		t.Errorf("detail: got %q, want it to name the order service", p.Detail)
	}
	if elapsed < timeout || elapsed > 2*time.Second {
		t.Errorf("answer took %s, want about %s", elapsed, timeout)
	}
	if id := resp.Header.Get(requestIDHeader); id == "" || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
		t.Errorf("log: got %q, want a record with request id %q", logs.String(), id)
	}
}

func TestNew(t *testing.T) {
	u := mustParse(t, "http://orders.internal:8080")
	good := Upstream{Name: "order", URLs: []*url.URL{u}, Timeout: time.Second}
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"valid", Config{APIKey: "k", Orders: good, Inventory: good}, true},
		{"no key", Config{Orders: good, Inventory: good}, false},
		{"no name", Config{APIKey: "k", Orders: Upstream{URLs: []*url.URL{u}, Timeout: time.Second}, Inventory: good}, false},
		{"no URL", Config{APIKey: "k", Orders: good, Inventory: Upstream{Name: "inventory", Timeout: time.Second}}, false},
		{"relative URL", Config{APIKey: "k", Orders: Upstream{Name: "order", URLs: []*url.URL{u, mustParse(t, "/orders")}, Timeout: time.Second}, Inventory: good}, false},
		{"nil URL", Config{APIKey: "k", Orders: Upstream{Name: "order", URLs: []*url.URL{nil}, Timeout: time.Second}, Inventory: good}, false},
		{"two URLs", Config{APIKey: "k", Orders: Upstream{Name: "order", URLs: []*url.URL{u, mustParse(t, "http://orders-2.internal:8080")}, Timeout: time.Second}, Inventory: good}, true},
		{"no timeout", Config{APIKey: "k", Orders: good, Inventory: Upstream{Name: "inventory", URLs: []*url.URL{u}}}, false},
		{"admin key", Config{APIKey: "k", AdminKey: "a", Orders: good, Inventory: good}, true},
		{"admin key is the API key", Config{APIKey: "k", AdminKey: "k", Orders: good, Inventory: good}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(tt.cfg, nil)
			if got := err == nil; got != tt.ok {
				t.Errorf("New: got err %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && g == nil {
				t.Error("New: got nil Gateway with nil error")
			}
		})
	}
}
