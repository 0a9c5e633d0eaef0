package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/convergehq/converge/internal/ui"
)

// orderMetrics is what an order instance's /metrics says, trimmed.
const orderMetrics = `# TYPE converge_http_request_duration_seconds histogram
converge_http_request_duration_seconds_bucket{method="POST",route="POST /api/v1/orders",status="202",le="+Inf"} 7
converge_http_request_duration_seconds_sum{method="POST",route="POST /api/v1/orders",status="202"} 0.1
converge_http_request_duration_seconds_count{method="POST",route="POST /api/v1/orders",status="202"} 7
converge_http_request_duration_seconds_bucket{method="GET",route="GET /readyz",status="200",le="+Inf"} 100
converge_http_request_duration_seconds_sum{method="GET",route="GET /readyz",status="200"} 0.1
converge_http_request_duration_seconds_count{method="GET",route="GET /readyz",status="200"} 100
# TYPE converge_outbox_backlog_events gauge
converge_outbox_backlog_events 12
# TYPE converge_consumer_pending_messages gauge
converge_consumer_pending_messages{consumer="order"} 3
# TYPE converge_consumer_ack_pending_messages gauge
converge_consumer_ack_pending_messages{consumer="order"} 2
# TYPE converge_relay_published_events_total counter
converge_relay_published_events_total 40
# TYPE converge_cache_lookups_total counter
converge_cache_lookups_total{cache="memory",result="hit"} 3
converge_cache_lookups_total{cache="memory",result="miss"} 1
`

// part serves /readyz and /metrics as a role does.
func part(t *testing.T, ready bool, metrics string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":503,"detail":"not ready: the database is down"}`)
			return
		}
		io.WriteString(w, `{"status":"ready"}`)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, metrics) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) Stop(_ context.Context, name string) error { return r.add("stop " + name) }
func (r *recorder) Restart(name string) error                 { return r.add("start " + name) }
func (r *recorder) add(call string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
	if strings.HasSuffix(call, "stuck") {
		return errors.New("it will not")
	}
	return nil
}

func TestState(t *testing.T) {
	up := part(t, true, orderMetrics)
	unready := part(t, false, "")
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	h, err := ui.New(ui.Config{Components: func() []ui.Component {
		return []ui.Component{
			{Name: "order-1", Role: "order", URL: up.URL, Control: true},
			{Name: "inventory-1", Role: "inventory", URL: unready.URL},
			{Name: "broker", Role: "broker", URL: gone.URL, Control: true},
		}
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/api/state", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /ui/api/state: %d %s", rec.Code, rec.Body)
	}
	var st ui.State
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Controls || len(st.Components) != 3 {
		t.Fatalf("state without a Control: got controls %v and %d parts, want false and 3", st.Controls, len(st.Components))
	}
	o, inv, b := st.Components[0], st.Components[1], st.Components[2]
	if o.Status != "up" || o.Control {
		t.Errorf("order-1: got status %q control %v, want up, false (no Control given)", o.Status, o.Control)
	}
	f := o.Figures
	for _, c := range []struct {
		what string
		got  *float64
		want float64
	}{{"requests (readyz left out)", f.Requests, 7}, {"outbox", f.Outbox, 12}, {"lag (pending + ack pending)", f.Lag, 5},
		{"published", f.Published, 40}, {"cache hits", f.CacheHits, 3}} {
		if c.got == nil || *c.got != c.want {
			t.Errorf("order-1 %s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	if f.DeadLetters != nil || f.Cache != "memory" {
		t.Errorf("order-1: got dead letters %v and cache %q, want none (not served) and memory", f.DeadLetters, f.Cache)
	}
	if inv.Status != "down" || inv.Detail != "not ready: the database is down" {
		t.Errorf("an unready part: got %q (%s), want down with its /readyz's detail", inv.Status, inv.Detail)
	}
	if b.Status != "down" || !strings.Contains(b.Detail, "connection refused") {
		t.Errorf("a part that does not answer: got %q (%s), want down, connection refused", b.Status, b.Detail)
	}
}

func TestControl(t *testing.T) {
	var ctl recorder
	h, err := ui.New(ui.Config{Control: &ctl, Components: func() []ui.Component {
		return []ui.Component{{Name: "broker", Role: "broker", URL: "http://127.0.0.1:1", Control: true}, {Name: "lb", Role: "lb", URL: "http://127.0.0.1:1"}}
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"action":"stop","component":"broker"}`, http.StatusOK},
		{`{"action":"start","component":"broker"}`, http.StatusOK},
		{`{"action":"stop","component":"lb"}`, http.StatusNotFound}, // not Control
		{`{"action":"stop","component":"nope"}`, http.StatusNotFound},
		{`{"action":"pause","component":"broker"}`, http.StatusBadRequest},
		{`{"action":"stop","Component":"broker"}`, http.StatusBadRequest},
	} {
		req := httptest.NewRequest("POST", "/ui/api/control", strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("POST %s: got %d %s, want %d", c.body, rec.Code, rec.Body, c.want)
		}
	}
	if got := strings.Join(ctl.calls, ", "); got != "stop broker, start broker" {
		t.Errorf("calls: got %q, want %q", got, "stop broker, start broker")
	}
}

func TestPage(t *testing.T) {
	h, err := ui.New(ui.Config{Components: func() []ui.Component { return nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/ui/": "<title>converge: live</title>", "/ui/app.js": "/ui/api/state", "/ui/style.css": ":focus-visible"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s: got %d, want 200 with %q", path, rec.Code, want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/ui/api/control", strings.NewReader(`{}`)))
	if rec.Code != http.StatusNotFound {
		t.Errorf("POST /ui/api/control without a Control: got %d, want 404", rec.Code)
	}
}
