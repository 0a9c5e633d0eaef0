package outbox

import (
	"context"
	"errors"
)

// SetBeforePublish makes r call f with the size of each batch it has read,
// before publishing it.
func SetBeforePublish(r *Relay, f func(n int)) { r.beforePublish = f }

// SetAfterRound makes r call f after each round of Run in which it held
// the lease. Call it before Run.
func SetAfterRound(r *Relay, f func()) { r.afterRound = f }

// Round is one round of r's loop: hold the lease, then publish one batch
// and mark it. It returns how many rows it published.
func Round(ctx context.Context, r *Relay) (int, error) {
	held, err := r.hold(ctx)
	if err != nil {
		return 0, err
	}
	if !held {
		return 0, errors.New("outbox lease held by another relay")
	}
	return r.flush(ctx)
}
