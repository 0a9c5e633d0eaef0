// Package order is the order service's domain: orders, their states and
// transitions, the use cases (place, cancel, read, wait) and the handling of
// inventory's replies. It owns DB A and cache A through the Store it is
// given, and talks to inventory only through events.
package order

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/convergehq/converge/internal/events"
)

// Status is where an order stands.
type Status string

// The statuses. PENDING is the only one that is not final, but a CONFIRMED
// order can still be cancelled.
const (
	Pending   Status = "PENDING"
	Confirmed Status = "CONFIRMED"
	Rejected  Status = "REJECTED"
	Cancelled Status = "CANCELLED"
)

// ParseStatus checks a status given by a client.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case Pending, Confirmed, Rejected, Cancelled:
		return st, nil
	}
	return "", fmt.Errorf("%w: status %q is not one of PENDING, CONFIRMED, REJECTED, CANCELLED", ErrInvalid, s)
}

// Errors of the order domain. The HTTP layer maps them to status codes; the
// consumer treats ErrNotFound on an event as permanent.
var (
	ErrNotFound            = errors.New("order not found")
	ErrInvalid             = errors.New("invalid order")
	ErrConflict            = errors.New("order conflict")
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrKeyTaken is returned by Tx.Create when another transaction stored
	// the same idempotency key first; the service then reads that one.
	ErrKeyTaken = errors.New("idempotency key taken")
)

// Item is one line of an order.
type Item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// Order is what the API returns.
type Order struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Status     Status    `json:"status"`
	Reason     string    `json:"reason"`
	Items      []Item    `json:"items"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Limits of a valid order.
const (
	MaxItems    = 100
	MaxQuantity = 10000
)

// PlaceInput is a request to place an order.
type PlaceInput struct {
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// Validate returns an error wrapping ErrInvalid that names the first
// problem.
func (in PlaceInput) Validate() error {
	if n := utf8.RuneCountInString(in.CustomerID); n < 1 || n > 128 {
		return fmt.Errorf("%w: customer_id must be 1 to 128 characters, got %d", ErrInvalid, n)
	}
	if n := len(in.Items); n < 1 || n > MaxItems {
		return fmt.Errorf("%w: an order has 1 to %d items, got %d", ErrInvalid, MaxItems, n)
	}
	seen := make(map[string]bool, len(in.Items))
	for i, it := range in.Items {
		if !events.ValidSKU(it.SKU) {
			return fmt.Errorf("%w: items[%d].sku %q must match [A-Za-z0-9._-]{1,64}", ErrInvalid, i, it.SKU)
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			return fmt.Errorf("%w: items[%d].quantity must be 1 to %d, got %d", ErrInvalid, i, MaxQuantity, it.Quantity)
		}
		if seen[it.SKU] {
			return fmt.Errorf("%w: sku %q appears twice", ErrInvalid, it.SKU)
		}
		seen[it.SKU] = true
	}
	return nil
}

func toEventItems(items []Item) []events.Item {
	out := make([]events.Item, len(items))
	for i, it := range items {
		out[i] = events.Item{SKU: it.SKU, Quantity: it.Quantity}
	}
	return out
}
