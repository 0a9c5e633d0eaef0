package inbox

import (
	"context"
	"fmt"

	"github.com/convergehq/converge/internal/events"
)

// ApplyBatch applies es in one transaction of update, so a batch of
// deliveries costs one commit (one fsync) instead of one each. If that
// transaction fails, it applies each event in a transaction of its own, so
// that one bad event fails alone and the others still go through. It
// returns one error per event.
//
// apply must claim the event in the inbox itself (it holds the store's
// transaction type), and must not have effects outside the transaction that
// would be wrong if the transaction rolled back.
func ApplyBatch[Tx any](ctx context.Context, update func(context.Context, func(Tx) error) error,
	es []events.Envelope, apply func(context.Context, Tx, events.Envelope) error) []error {
	errs := make([]error, len(es))
	if len(es) == 0 {
		return errs
	}
	err := update(ctx, func(tx Tx) error {
		for _, e := range es {
			if err := apply(ctx, tx, e); err != nil {
				return fmt.Errorf("apply %s %s: %w", e.Type, e.ID, err)
			}
		}
		return nil
	})
	if err == nil {
		return errs
	}
	if len(es) == 1 {
		errs[0] = err
		return errs
	}
	for i, e := range es {
		errs[i] = update(ctx, func(tx Tx) error {
			if err := apply(ctx, tx, e); err != nil {
				return fmt.Errorf("apply %s %s: %w", e.Type, e.ID, err)
			}
			return nil
		})
	}
	return errs
}
