package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries the id the gateway gives every request.
const RequestIDHeader = "X-Request-ID"

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID is the request id ctx carries, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// route is where the router of a request writes the pattern it matched,
// for the span name and the access log (ServeMux sets Request.Pattern only
// on the request it was handed, which a handler in between may copy).
type route struct{ pattern string }

type routeKey struct{}

// SetRoute records the route pattern that matched the request of ctx.
func SetRoute(ctx context.Context, pattern string) {
	if r, ok := ctx.Value(routeKey{}).(*route); ok {
		r.pattern = pattern
	}
}

// HTTPConfig configures Handler.
type HTTPConfig struct {
	Role      string // names the spans and the access log lines: "lb", "gateway", "order", ...
	Tracing   Tracing
	Log       *slog.Logger
	AccessLog bool // a line per request at info (health checks at debug)
}

// Handler serves next inside a server span, a child of the trace context
// the request carries. It writes that span's context back into the request
// headers, so a proxy forwards the trace to the next hop, and, with
// AccessLog, logs a line per request: method, route, path, status,
// duration, request id and trace id.
//
// Health checks (/healthz, /readyz) get no span, and their access log line
// is at debug: the load balancer and gateways ask twice a second.
func Handler(cfg HTTPConfig, next http.Handler) http.Handler {
	tracer := cfg.Tracing.Tracer(cfg.Role)
	prop := cfg.Tracing.Propagation()
	log := Logger(cfg.Log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		health := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
		rt := &route{}
		ctx := context.WithValue(r.Context(), routeKey{}, rt)
		if id := r.Header.Get(RequestIDHeader); id != "" {
			ctx = WithRequestID(ctx, id)
		}
		var span trace.Span
		if !health {
			ctx = prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
			ctx, span = tracer.Start(ctx, cfg.Role+" "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
			prop.Inject(ctx, propagation.HeaderCarrier(r.Header))
		}
		rec := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(ctx))
		status := rec.status
		if status == 0 {
			status = http.StatusOK // nothing written: net/http answers 200
		}
		if span != nil {
			if rt.pattern != "" {
				name := cfg.Role + " " + rt.pattern
				if !strings.Contains(rt.pattern, " ") { // a pattern for every method
					name = cfg.Role + " " + r.Method + " " + rt.pattern
				}
				span.SetName(name)
				span.SetAttributes(attribute.String("http.route", rt.pattern))
			}
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			span.End()
		}
		if !cfg.AccessLog {
			return
		}
		level := slog.LevelInfo
		if health {
			level = slog.LevelDebug
		}
		// The gateway gives a request its id on the way in: the response
		// has it when the request had none.
		if id := w.Header().Get(RequestIDHeader); id != "" {
			ctx = WithRequestID(ctx, id)
		}
		log.LogAttrs(ctx, level, "http request",
			slog.String("method", r.Method),
			slog.String("route", rt.pattern),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)))
	})
}

// statusWriter keeps the status of the final response. Unwrap lets
// http.ResponseController (flushes, deadlines) reach the writer below.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	// 1xx answers (100 Continue) come before the final one.
	if s.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
