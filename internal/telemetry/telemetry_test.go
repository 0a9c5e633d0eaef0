package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/convergehq/converge/internal/telemetry"
	"github.com/convergehq/converge/internal/telemetry/telemetrytest"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestFromEnvOff: without an exporter asked for, tracing is the zero
// Tracing and starts nothing.
func TestFromEnvOff(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, e := range [][]string{
		nil,
		{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"},
		{"OTEL_SDK_DISABLED", "true", "OTEL_TRACES_EXPORTER", "otlp"},
		{"OTEL_SERVICE_NAME", "x"},
	} {
		tr, shutdown, err := telemetry.FromEnv(context.Background(), env(e...), "converge-test")
		if err != nil || tr.Provider != nil {
			t.Errorf("FromEnv(%v) = provider %v, err %v; want off", e, tr.Provider, err)
			continue
		}
		if err := shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("goroutines: %d before, %d after; tracing off must start none", before, after)
	}
}

func TestFromEnvRefusesWhatItCannotDo(t *testing.T) {
	for _, e := range [][]string{
		{"OTEL_TRACES_EXPORTER", "zipkin"},
		{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
	} {
		if _, _, err := telemetry.FromEnv(context.Background(), env(e...), "converge-test"); err == nil {
			t.Errorf("FromEnv(%v): no error", e)
		}
	}
}

// TestFromEnvExportsOTLP points the exporter at a receiver, as the
// standard variables do, and reads the span back.
func TestFromEnvExportsOTLP(t *testing.T) {
	rcv := telemetrytest.NewReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL) // the exporter reads the process environment
	tr, shutdown, err := telemetry.FromEnv(context.Background(), env("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL), "converge-test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Tracer("test").Start(context.Background(), "hello")
	span.End()
	if err := shutdown(context.Background()); err != nil { // flushes
		t.Fatal(err)
	}
	got := rcv.Spans()
	if len(got) != 1 || got[0].Name != "hello" || got[0].Service != "converge-test" {
		t.Fatalf("received %+v, want one span hello of service converge-test", got)
	}
}

// syncBuffer is a log destination many goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestHandler: a server span under the caller's trace, written back into
// the request headers for a proxy; an access log line with method, route,
// status, duration, request id and trace id; health checks at debug.
func TestHandler(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var forwarded string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		forwarded = r.Header.Get("traceparent")
		w.WriteHeader(http.StatusTeapot)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	h := telemetry.Handler(telemetry.HTTPConfig{Role: "svc", Tracing: telemetry.Tracing{Provider: tp}, Log: log, AccessLog: true},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, pattern := mux.Handler(r)
			telemetry.SetRoute(r.Context(), pattern)
			mux.ServeHTTP(w, r)
		}))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := httptest.NewRequest("POST", "/things/42", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.Header.Set("X-Request-ID", "req-1")
	h.ServeHTTP(httptest.NewRecorder(), req)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1 (none for the health check)", len(spans))
	}
	s := spans[0]
	if s.Name != "svc POST /things/{id}" || s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %q trace %s parent %s; want svc POST /things/{id} under the caller's span", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	c := propagation.MapCarrier{"traceparent": forwarded}
	if got := telemetry.TraceParent(propagation.TraceContext{}.Extract(context.Background(), c)); !strings.Contains(got, s.SpanContext.SpanID().String()) {
		t.Errorf("the request forwarded traceparent %q, want the server span %s", forwarded, s.SpanContext.SpanID())
	}

	lines := logs.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2: %v", len(lines), lines)
	}
	a := lines[0]
	for k, want := range map[string]any{"level": "INFO", "msg": "http request", "method": "POST", "route": "POST /things/{id}",
		"path": "/things/42", "status": float64(http.StatusTeapot), "request_id": "req-1", "trace_id": traceID} {
		if a[k] != want {
			t.Errorf("access log %s = %v, want %v (line %v)", k, a[k], want, a)
		}
	}
	if _, ok := a["duration"]; !ok {
		t.Errorf("access log has no duration: %v", a)
	}
	if lines[1]["level"] != "DEBUG" || lines[1]["path"] != "/healthz" {
		t.Errorf("health check logged as %v, want at DEBUG", lines[1])
	}

	// Off: no line at all.
	logs.b.Reset()
	off := telemetry.Handler(telemetry.HTTPConfig{Role: "svc", Log: log}, mux)
	off.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/things/1", nil))
	if l := logs.lines(t); len(l) != 0 {
		t.Errorf("access log off, yet: %v", l)
	}
}

// TestWithTraceParent: a step done for many orders at once is put under
// each order's trace, and an order without one under none.
func TestWithTraceParent(t *testing.T) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.WithTraceParent(context.Background(), tp)
	if got := telemetry.TraceParent(ctx); got != tp {
		t.Errorf("round trip: %q, want %q", got, tp)
	}
	if got := telemetry.TraceParent(telemetry.WithTraceParent(ctx, "")); got != "" {
		t.Errorf("an empty traceparent over another: %q, want none", got)
	}
}
