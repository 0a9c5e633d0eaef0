// Package inventory is the inventory service's domain: stock per SKU,
// reservations per order, and the handling of the order service's events.
// It owns DB B and cache B through the Store it is given. Stock never goes
// negative: an order reserves all its items or none.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/outbox"
)

// Errors of the inventory domain.
var (
	ErrNotFound = errors.New("sku not found")
	ErrInvalid  = errors.New("invalid stock")
	ErrConflict = errors.New("stock conflict")
)

// Item is the stock of one SKU.
type Item struct {
	SKU       string    `json:"sku"`
	OnHand    int64     `json:"on_hand"`
	Reserved  int64     `json:"reserved"`
	Available int64     `json:"available"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ReservationStatus is where an order's claim on stock stands.
type ReservationStatus string

// Reservation statuses. Cancelled marks an order whose cancel arrived
// before its creation: the creation, when it comes, reserves nothing.
const (
	Active    ReservationStatus = "active"
	Released  ReservationStatus = "released"
	Refused   ReservationStatus = "rejected"
	Cancelled ReservationStatus = "cancelled"
)

// Reservation is what inventory decided for one order.
type Reservation struct {
	OrderID string
	Status  ReservationStatus
	Reason  string
	Items   []events.Item
}

// MaxOnHand bounds the stock of one SKU.
const MaxOnHand = 1_000_000_000

// Store is DB B as the service needs it. inventorysql implements it on SQL;
// inventorycache fronts it with cache B.
type Store interface {
	Get(ctx context.Context, sku string) (Item, error)
	// List returns up to limit items with a SKU after after, in SKU order.
	List(ctx context.Context, after string, limit int) ([]Item, error)
	// Update runs fn in one transaction and commits it if fn returns nil.
	Update(ctx context.Context, fn func(Tx) error) error
	// Record reads what DB B holds of an order's way, for its timeline.
	Record(ctx context.Context, orderID string) (Record, error)
}

// Record is what DB B holds of an order's way: the order service's events
// about it that inventory applied (inbox), the replies it sent (outbox),
// and the reason of a rejection.
type Record struct {
	Applied []inbox.Entry
	Sent    []outbox.Entry
	Reason  string
}

// Tx is what a use case may do inside one transaction.
type Tx interface {
	// Stock returns the items that exist among skus and, on engines with
	// row locks, locks them until the transaction ends (pass skus sorted,
	// so that concurrent transactions lock in one order).
	Stock(ctx context.Context, skus []string) (map[string]Item, error)
	// SetOnHand creates or updates a SKU; ErrConflict if onHand < reserved.
	SetOnHand(ctx context.Context, sku string, onHand int64, at time.Time) (Item, error)
	// Reserve adds qty to reserved only if that much is available; it
	// returns ErrConflict otherwise.
	Reserve(ctx context.Context, sku string, qty int, at time.Time) error
	Release(ctx context.Context, sku string, qty int, at time.Time) error
	// Reservation reads what was decided for an order, and holds the
	// order's reservation until the transaction ends, whether or not one
	// exists yet: transactions about one order (its creation and its
	// cancel, on two instances) run one after the other.
	Reservation(ctx context.Context, orderID string) (Reservation, bool, error)
	// AddReservation records the decision for an order that has none.
	AddReservation(ctx context.Context, r Reservation, at time.Time) error
	// SetReservationStatus moves an order's reservation from status from to
	// status to; ErrConflict, changing nothing, if it is not in from.
	SetReservationStatus(ctx context.Context, orderID string, from, to ReservationStatus, at time.Time) error
	// LockOrders takes, until the transaction ends, the lock that
	// Reservation takes for each order. LockStock locks the rows of skus.
	// A transaction that decides about several orders takes all its locks
	// first, in one global order (orders, then SKUs, each sorted), so that
	// two instances applying batches cannot deadlock. Both are no-ops on an
	// engine with a single writer.
	LockOrders(ctx context.Context, orderIDs []string) error
	LockStock(ctx context.Context, skus []string) error
	// Claim records e in the inbox; false means it was applied before.
	Claim(ctx context.Context, e events.Envelope) (bool, error)
	// Emit adds e to the outbox.
	Emit(ctx context.Context, e events.Envelope) error
}

// ValidateStock checks a SetStock request.
func ValidateStock(sku string, onHand int64) error {
	if !events.ValidSKU(sku) {
		return fmt.Errorf("%w: sku %q must match [A-Za-z0-9._-]{1,64}", ErrInvalid, sku)
	}
	if onHand < 0 || onHand > MaxOnHand {
		return fmt.Errorf("%w: on_hand must be 0 to %d, got %d", ErrInvalid, MaxOnHand, onHand)
	}
	return nil
}
