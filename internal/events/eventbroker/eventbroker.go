// Package eventbroker joins the event contract to the broker's consumer:
// it decodes each delivery into an envelope, hands a batch to a service,
// and marks as permanent (dead-letter at once) what no retry can fix:
// bytes that are not an event, and events the service does not know. The
// services' own adapters (orderevents, inventoryevents) use it.
package eventbroker

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/telemetry"
)

// Handler adapts a service's ApplyBatch to the broker's consumer. Each
// delivery is handled in a consumer span named after service, a child of
// the trace context in the message headers (or, without one, of the
// envelope's traceparent); the event handed to apply carries that span as
// its traceparent, so what the service does and emits for it continues the
// order's trace.
func Handler(service string, tr telemetry.Tracing, apply func(context.Context, []events.Envelope) []error, log *slog.Logger) broker.BatchHandler {
	tracer := tr.Tracer(service)
	prop := tr.Propagation()
	log = telemetry.Logger(log)
	return func(ctx context.Context, ds []broker.Delivery) []error {
		errs := make([]error, len(ds))
		spans := make([]trace.Span, len(ds))
		ctxs := make([]context.Context, len(ds))
		var (
			batch []events.Envelope
			at    []int // index in ds of each event of batch
		)
		for i, d := range ds {
			e, err := events.Decode(d.Data)
			dctx := prop.Extract(telemetry.WithTraceParent(ctx, e.TraceParent), headerCarrier(d.Header))
			ctxs[i], spans[i] = tracer.Start(dctx, service+" process "+d.Subject, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", d.Subject),
					attribute.String("messaging.message.id", e.ID),
					attribute.Int64("converge.stream_seq", int64(d.StreamSeq)),
					attribute.Int64("converge.deliveries", int64(d.NumDelivered))))
			if err != nil {
				errs[i] = err
				continue
			}
			if tp := telemetry.TraceParent(ctxs[i]); tp != "" {
				e.TraceParent = tp
			}
			batch = append(batch, e)
			at = append(at, i)
		}
		for j, err := range apply(ctx, batch) {
			errs[at[j]] = err
		}
		for i, err := range errs {
			if errors.Is(err, events.ErrMalformed) || errors.Is(err, events.ErrUnknown) {
				errs[i] = broker.Permanent(err)
			}
			if err != nil {
				d := ds[i]
				spans[i].SetStatus(codes.Error, err.Error())
				log.WarnContext(ctxs[i], "event not applied", "subject", d.Subject, "seq", d.StreamSeq, "delivery", d.NumDelivered, "err", err)
			}
			spans[i].End()
		}
		return errs
	}
}

// headerCarrier reads and writes trace context in NATS message headers,
// whose keys, unlike HTTP's, are case-sensitive.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
