// Package telemetry is how converge's roles are seen from outside: the
// OpenTelemetry tracer provider they are given (built from the standard
// OTEL_* variables, off by default), the W3C trace context that follows an
// order through HTTP headers, outbox rows and broker message headers, the
// HTTP middleware that opens a server span and writes the access log, and a
// slog handler that adds the trace and request ids to what is logged with a
// context. Nothing here is global: a role is handed a Tracing in its config.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is what a role traces with. The zero value traces nothing and
// costs next to nothing: a no-op provider, and the W3C propagator, so a
// trace context a client sends still reaches the outbox and the broker.
type Tracing struct {
	Provider   trace.TracerProvider          // nil: no-op
	Propagator propagation.TextMapPropagator // nil: W3C trace context and baggage
}

// scope prefixes the instrumentation scope of every tracer.
const scope = "github.com/convergehq/converge/"

// Tracer is the tracer of one part of a role ("order", "gateway", ...).
func (t Tracing) Tracer(part string) trace.Tracer {
	if t.Provider == nil {
		return noop.NewTracerProvider().Tracer(scope + part)
	}
	return t.Provider.Tracer(scope + part)
}

// Propagation is the propagator of trace context in HTTP and broker headers.
func (t Tracing) Propagation() propagation.TextMapPropagator {
	if t.Propagator == nil {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return t.Propagator
}

// FromEnv builds the tracing of a process from the standard OTEL_*
// variables. Tracing is on when OTEL_TRACES_EXPORTER is otlp, or when it is
// unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turns it off. On, spans go by OTLP over HTTP
// (http/protobuf) in batches; the exporter reads its endpoint, headers and
// timeout, the SDK its sampler (OTEL_TRACES_SAMPLER) and batching
// (OTEL_BSP_*), and the resource OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES, from the process environment. service is the
// service name when OTEL_SERVICE_NAME is unset.
//
// Off, it returns the zero Tracing: no exporter, no goroutine. shutdown
// flushes what is buffered; call it once the role has stopped.
func FromEnv(ctx context.Context, getenv func(string) string, service string) (_ Tracing, shutdown func(context.Context) error, _ error) {
	off := func(context.Context) error { return nil }
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return Tracing{}, off, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return Tracing{}, off, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return Tracing{}, off, nil
		}
	case "otlp":
	default:
		return Tracing{}, nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: converge exports traces by otlp, or none", exp)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return Tracing{}, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: converge exports OTLP over http/protobuf only", proto)
	}
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return Tracing{}, nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return Tracing{}, nil, errors.Join(fmt.Errorf("trace resource: %w", err), exporter.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return Tracing{Provider: tp}, tp.Shutdown, nil
}

// traceContext is the W3C format of the traceparent kept in outbox rows
// and event envelopes, whatever propagator the headers use.
var traceContext propagation.TraceContext

// TraceParent is the W3C traceparent of the span in ctx, or "" when ctx
// holds none.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx with the span context tp describes as its
// parent, in place of any span ctx holds; with an empty or malformed tp it
// holds none. A step done for many orders at once (one transaction, one
// batch) uses it to put each order's part under that order's trace.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContext{})
	if tp == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// Parents collects the span contexts of the orders one shared step served
// (a transaction, a cache invalidation), once each, to record that step
// under each of them afterwards.
type Parents []trace.SpanContext

// Add adds the span context of ctx, if it holds one.
func (p *Parents) Add(ctx context.Context) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	for _, have := range *p {
		if have.Equal(sc) {
			return
		}
	}
	*p = append(*p, sc)
}

// Record records a step that ran from start to end as a span named name
// under each parent. err, if any, marks the spans failed.
func Record(ctx context.Context, tr trace.Tracer, parents Parents, name string, start, end time.Time, err error, attrs ...attribute.KeyValue) {
	for _, sc := range parents {
		_, span := tr.Start(trace.ContextWithSpanContext(ctx, sc), name, trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End(trace.WithTimestamp(end))
	}
}
