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

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
)

// Handler adapts a service's ApplyBatch to the broker's consumer.
func Handler(apply func(context.Context, []events.Envelope) []error, log *slog.Logger) broker.BatchHandler {
	return func(ctx context.Context, ds []broker.Delivery) []error {
		errs := make([]error, len(ds))
		var (
			batch []events.Envelope
			at    []int // index in ds of each event of batch
		)
		for i, d := range ds {
			e, err := events.Decode(d.Data)
			if err != nil {
				errs[i] = err
				continue
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
				log.WarnContext(ctx, "event not applied", "subject", d.Subject, "seq", d.StreamSeq, "delivery", d.NumDelivered, "err", err)
			}
		}
		return errs
	}
}
