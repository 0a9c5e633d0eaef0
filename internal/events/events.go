// Package events is the contract between converge's services: the event
// types, their payloads and versions, the CloudEvents envelope they travel in,
// and the broker subjects and streams that carry them. Both services import
// it; neither imports the other.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Type is a CloudEvents type attribute.
type Type string

// The event types converge knows. A consumer refuses any other.
const (
	OrderCreated   Type = "io.converge.order.created"
	OrderCancelled Type = "io.converge.order.cancelled"
	StockReserved  Type = "io.converge.inventory.reserved"
	StockRejected  Type = "io.converge.inventory.rejected"
	StockReleased  Type = "io.converge.inventory.released"
)

// SchemaVersion is the version of every payload below. A consumer refuses an
// event of another version rather than guess at its meaning.
const SchemaVersion = "1"

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// subjectOf is the broker subject events of type t are published on, or ""
// for a type converge does not know. Subjects are past-tense facts; each
// type has exactly one.
func subjectOf(t Type) string {
	switch t {
	case OrderCreated:
		return "orders.created"
	case OrderCancelled:
		return "orders.cancelled"
	case StockReserved:
		return "inventory.reserved"
	case StockRejected:
		return "inventory.rejected"
	case StockReleased:
		return "inventory.released"
	}
	return ""
}

// Streams: the order service publishes to Orders, the inventory service to
// Inventory; dead letters of both land in DeadLetters.
const (
	OrdersStream      = "ORDERS"
	OrdersSubjects    = "orders.>"
	InventoryStream   = "INVENTORY"
	InventorySubjects = "inventory.>"
	DeadLetterStream  = "DLQ"
	DeadLetterSubject = "dlq.>"
)

// Reasons an order is rejected.
const (
	ReasonInsufficientStock = "insufficient_stock"
	ReasonUnknownSKU        = "unknown_sku"
)

// Errors a consumer sees when it cannot read an event. Both are permanent:
// retrying the same bytes cannot help, so the message belongs in the
// dead-letter stream.
var (
	ErrMalformed = errors.New("malformed event")
	ErrUnknown   = errors.New("unknown event")
)

// Envelope is a CloudEvents 1.0 event in structured JSON mode, with two
// extension attributes: schemaversion, and traceparent (W3C trace context) so
// that a trace can follow an order across the broker.
type Envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            Type            `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	SchemaVersion   string          `json:"schemaversion"`
	TraceParent     string          `json:"traceparent,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// MaxSKU is the longest SKU, in bytes.
const MaxSKU = 64

// ValidSKU reports whether s is a well-formed SKU: 1 to MaxSKU characters
// from [A-Za-z0-9._-]. Both services hold SKUs to this rule, so an order
// never names a SKU inventory could not store.
func ValidSKU(s string) bool {
	if len(s) < 1 || len(s) > MaxSKU {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Item is one line of an order.
type Item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// OrderCreatedData asks inventory to reserve all items, or none.
type OrderCreatedData struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// OrderCancelledData asks inventory to release what it holds for the order.
type OrderCancelledData struct {
	OrderID string `json:"order_id"`
}

// StockReservedData says every item of the order is reserved.
type StockReservedData struct {
	OrderID string `json:"order_id"`
	Items   []Item `json:"items"`
}

// StockRejectedData says nothing was reserved, and why.
type StockRejectedData struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// StockReleasedData says a reservation was given back.
type StockReleasedData struct {
	OrderID string `json:"order_id"`
}

// New builds an envelope with a time-ordered id (UUIDv7, so outbox and inbox
// keys insert at the right edge of their indexes).
func New(source string, t Type, subject string, data any, now time.Time) (Envelope, error) {
	if subjectOf(t) == "" {
		return Envelope{}, fmt.Errorf("new event: %w: type %q", ErrUnknown, t)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Envelope{}, fmt.Errorf("new event id: %w", err)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s: %w", t, err)
	}
	return Envelope{
		SpecVersion:     SpecVersion,
		ID:              id.String(),
		Source:          source,
		Type:            t,
		Subject:         subject,
		Time:            now.UTC(),
		DataContentType: "application/json",
		SchemaVersion:   SchemaVersion,
		Data:            raw,
	}, nil
}

// BrokerSubject is the subject the event is published on.
func (e Envelope) BrokerSubject() string { return subjectOf(e.Type) }

// Decode parses and checks an envelope. It returns an error wrapping
// ErrMalformed or ErrUnknown when the event cannot be used.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case e.SpecVersion != SpecVersion:
		return Envelope{}, fmt.Errorf("%w: specversion %q, want %q", ErrUnknown, e.SpecVersion, SpecVersion)
	case e.ID == "" || e.Source == "" || e.Subject == "":
		return Envelope{}, fmt.Errorf("%w: id, source and subject are required", ErrMalformed)
	case subjectOf(e.Type) == "":
		return Envelope{}, fmt.Errorf("%w: type %q", ErrUnknown, e.Type)
	case e.SchemaVersion != SchemaVersion:
		return Envelope{}, fmt.Errorf("%w: %s schemaversion %q, want %q", ErrUnknown, e.Type, e.SchemaVersion, SchemaVersion)
	case len(e.Data) == 0 || string(e.Data) == "null":
		return Envelope{}, fmt.Errorf("%w: %s %s has no data", ErrMalformed, e.Type, e.ID)
	}
	return e, nil
}

// DecodeData reads the payload into dst and checks that it names an order.
func (e Envelope) DecodeData(dst interface{ orderID() string }) error {
	if err := json.Unmarshal(e.Data, dst); err != nil {
		return fmt.Errorf("%w: %s %s data: %v", ErrMalformed, e.Type, e.ID, err)
	}
	if dst.orderID() == "" {
		return fmt.Errorf("%w: %s %s data has no order_id", ErrMalformed, e.Type, e.ID)
	}
	return nil
}

func (d *OrderCreatedData) orderID() string   { return d.OrderID }
func (d *OrderCancelledData) orderID() string { return d.OrderID }
func (d *StockReservedData) orderID() string  { return d.OrderID }
func (d *StockRejectedData) orderID() string  { return d.OrderID }
func (d *StockReleasedData) orderID() string  { return d.OrderID }
