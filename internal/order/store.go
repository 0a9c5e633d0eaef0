package order

import (
	"context"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/outbox"
)

// Store is DB A as the service needs it. ordersql implements it on SQL;
// ordercache fronts it with cache A.
type Store interface {
	// Get reads one order outside any transaction.
	Get(ctx context.Context, id string) (Order, error)
	// List reads orders in id order (ids are time-ordered) after f.After.
	List(ctx context.Context, f Filter) ([]Order, error)
	// Update runs fn in one transaction and commits it if fn returns nil.
	Update(ctx context.Context, fn func(Tx) error) error
	// Record reads what DB A holds of an order's way, for its timeline.
	Record(ctx context.Context, id string) (Record, error)
}

// Record is what DB A holds of an order's way: the times of its row, and
// the events the service sent (outbox) and applied (inbox) about it.
type Record struct {
	Status     Status
	AcceptedAt time.Time // zero for an order placed before it was kept
	CreatedAt  time.Time
	Sent       []outbox.Entry
	Applied    []inbox.Entry
}

// Tx is what a use case may do inside one transaction: change orders, and
// record the events it consumed (inbox) and produced (outbox) atomically
// with those changes.
type Tx interface {
	// Get reads an order and, on engines with row locks, locks it until
	// the transaction ends, so that what the use case decides from it still
	// holds when it writes.
	Get(ctx context.Context, id string) (Order, error)
	// Idempotency returns the order and request hash stored under key.
	Idempotency(ctx context.Context, key string) (orderID, requestHash string, found bool, err error)
	// Create stores o, received at accepted (for its timeline), and key ->
	// o.ID when key is not empty. It returns ErrKeyTaken if key is stored
	// already. Times are kept to the microsecond and read back in UTC.
	Create(ctx context.Context, o Order, accepted time.Time, key, requestHash string) error
	// SetStatus moves order id from status from to status to. It fails
	// with ErrConflict, changing nothing, if the order is not in from.
	SetStatus(ctx context.Context, id string, from, to Status, reason string, at time.Time) error
	// Claim records e in the inbox; false means it was applied before.
	Claim(ctx context.Context, e events.Envelope) (bool, error)
	// Emit adds e to the outbox.
	Emit(ctx context.Context, e events.Envelope) error
}

// Filter selects orders to list.
type Filter struct {
	CustomerID string
	Status     Status
	After      string
	Limit      int
}
