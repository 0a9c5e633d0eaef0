package inventory

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/telemetry"
)

// Source is the CloudEvents source of every event inventory emits.
const Source = "converge/inventory"

// Consumer is the inbox name of the inventory service's consumer.
const Consumer = "inventory"

// Service runs the inventory use cases.
type Service struct {
	store  Store
	notify func()
	log    *slog.Logger
	now    func() time.Time
}

// NewService returns a service over store; notify is called after every
// commit that wrote to the outbox.
func NewService(store Store, notify func(), log *slog.Logger) *Service {
	return &Service{store: store, notify: notify, log: log, now: time.Now}
}

// SetStock sets the stock on hand of sku, creating it if needed.
func (s *Service) SetStock(ctx context.Context, sku string, onHand int64) (Item, error) {
	if err := ValidateStock(sku, onHand); err != nil {
		return Item{}, err
	}
	var it Item
	err := s.store.Update(ctx, func(tx Tx) error {
		var err error
		it, err = tx.SetOnHand(ctx, sku, onHand, s.now().UTC())
		return err
	})
	if err != nil {
		return Item{}, fmt.Errorf("set stock of %s: %w", sku, err)
	}
	return it, nil
}

// Get returns the stock of one SKU.
func (s *Service) Get(ctx context.Context, sku string) (Item, error) {
	it, err := s.store.Get(ctx, sku)
	if err != nil {
		return Item{}, fmt.Errorf("get stock of %s: %w", sku, err)
	}
	return it, nil
}

// Page is one page of a listing; Next is the cursor of the next page.
type Page struct {
	Items []Item `json:"items"`
	Next  string `json:"next"`
}

// Limits of a listing page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// List returns a page of stock items after the SKU after.
func (s *Service) List(ctx context.Context, after string, limit int) (Page, error) {
	if limit == 0 {
		limit = DefaultLimit
	}
	if limit < 1 || limit > MaxLimit {
		return Page{}, fmt.Errorf("%w: limit must be 1 to %d, got %d", ErrInvalid, MaxLimit, limit)
	}
	items, err := s.store.List(ctx, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list stock: %w", err)
	}
	p := Page{Items: items}
	if len(items) > limit {
		p.Items = items[:limit]
		p.Next = p.Items[limit-1].SKU
	}
	if p.Items == nil {
		p.Items = []Item{}
	}
	return p, nil
}

// Apply applies one event from the order service.
func (s *Service) Apply(ctx context.Context, e events.Envelope) error {
	return s.ApplyBatch(ctx, []events.Envelope{e})[0]
}

// ApplyBatch applies events from the order service in one transaction,
// each at most once (inbox) and together with the reply it emits (outbox),
// and returns one error per event.
func (s *Service) ApplyBatch(ctx context.Context, es []events.Envelope) []error {
	// Every transaction of the batch takes the batch's locks first, in one
	// global order, then applies: instances that apply batches about the
	// same orders and SKUs wait for each other instead of deadlocking.
	update := func(ctx context.Context, fn func(Tx) error) error {
		return s.store.Update(ctx, func(tx Tx) error {
			if err := lockBatch(ctx, tx, es); err != nil {
				return err
			}
			return fn(tx)
		})
	}
	errs := inbox.ApplyBatch(ctx, update, es, s.apply)
	for _, err := range errs {
		if err == nil {
			s.notify()
			break
		}
	}
	return errs
}

// lockBatch takes the locks the events of es will need: their orders,
// then the SKUs they reserve or release. An event it cannot read is left
// to apply, which says why.
func lockBatch(ctx context.Context, tx Tx, es []events.Envelope) error {
	var orders, cancelled, skus []string
	for _, e := range es {
		switch e.Type {
		case events.OrderCreated:
			var d events.OrderCreatedData
			if e.DecodeData(&d) == nil {
				orders = append(orders, d.OrderID)
				for _, it := range d.Items {
					skus = append(skus, it.SKU)
				}
			}
		case events.OrderCancelled:
			var d events.OrderCancelledData
			if e.DecodeData(&d) == nil {
				orders = append(orders, d.OrderID)
				cancelled = append(cancelled, d.OrderID)
			}
		}
	}
	if err := tx.LockOrders(ctx, orders); err != nil {
		return err
	}
	for _, id := range cancelled {
		r, _, err := tx.Reservation(ctx, id)
		if err != nil {
			return err
		}
		for _, it := range r.Items {
			skus = append(skus, it.SKU)
		}
	}
	return tx.LockStock(ctx, skus)
}

func (s *Service) apply(ctx context.Context, tx Tx, e events.Envelope) error {
	ctx = telemetry.WithTraceParent(ctx, e.TraceParent) // the batch's transaction, under this event's trace
	now := s.now().UTC()
	switch e.Type {
	case events.OrderCreated:
		var d events.OrderCreatedData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		if fresh, err := tx.Claim(ctx, e); err != nil || !fresh {
			return err
		}
		return s.reserve(ctx, tx, d, e.TraceParent, now)
	case events.OrderCancelled:
		var d events.OrderCancelledData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		if fresh, err := tx.Claim(ctx, e); err != nil || !fresh {
			return err
		}
		return s.release(ctx, tx, d.OrderID, e.TraceParent, now)
	}
	return fmt.Errorf("%w: the inventory service does not consume %s", events.ErrUnknown, e.Type)
}

// reserve reserves every item of the order or none, and emits the answer.
func (s *Service) reserve(ctx context.Context, tx Tx, d events.OrderCreatedData, trace string, now time.Time) error {
	if _, found, err := tx.Reservation(ctx, d.OrderID); err != nil || found {
		// Decided before, or cancelled before it arrived: nothing to do.
		return err
	}
	if len(d.Items) == 0 {
		return fmt.Errorf("%w: order %s has no items", events.ErrMalformed, d.OrderID)
	}
	// Sorted, for a stable reservation. The SKU rows are already locked,
	// in the database's own order, by lockBatch, so the order of the
	// writes below cannot deadlock.
	items := slices.Clone(d.Items)
	slices.SortFunc(items, func(a, b events.Item) int { return strings.Compare(a.SKU, b.SKU) })
	skus := make([]string, len(items))
	for i, it := range items {
		if it.Quantity < 1 {
			return fmt.Errorf("%w: order %s: quantity %d of %s", events.ErrMalformed, d.OrderID, it.Quantity, it.SKU)
		}
		if i > 0 && it.SKU == items[i-1].SKU { // sorted: a repeat is next to its twin
			return fmt.Errorf("%w: order %s: sku %s appears twice", events.ErrMalformed, d.OrderID, it.SKU)
		}
		skus[i] = it.SKU
	}
	stock, err := tx.Stock(ctx, skus)
	if err != nil {
		return err
	}
	reason := ""
	for _, it := range items {
		st, ok := stock[it.SKU]
		if !ok {
			reason = events.ReasonUnknownSKU
			break
		}
		if st.Available < int64(it.Quantity) {
			reason = events.ReasonInsufficientStock
		}
	}
	if reason == "" {
		for _, it := range items {
			if err := tx.Reserve(ctx, it.SKU, it.Quantity, now); err != nil {
				return err
			}
		}
		if err := tx.AddReservation(ctx, Reservation{OrderID: d.OrderID, Status: Active, Items: items}, now); err != nil {
			return err
		}
		return s.emit(ctx, tx, events.StockReserved, d.OrderID, events.StockReservedData{OrderID: d.OrderID, Items: d.Items}, trace, now)
	}
	if err := tx.AddReservation(ctx, Reservation{OrderID: d.OrderID, Status: Refused, Reason: reason}, now); err != nil {
		return err
	}
	return s.emit(ctx, tx, events.StockRejected, d.OrderID, events.StockRejectedData{OrderID: d.OrderID, Reason: reason}, trace, now)
}

// release gives back what the order holds. A cancel that overtakes the
// order's creation leaves a marker, so the creation reserves nothing.
func (s *Service) release(ctx context.Context, tx Tx, orderID, trace string, now time.Time) error {
	r, found, err := tx.Reservation(ctx, orderID)
	if err != nil {
		return err
	}
	if !found {
		return tx.AddReservation(ctx, Reservation{OrderID: orderID, Status: Cancelled}, now)
	}
	if r.Status != Active {
		return nil
	}
	for _, it := range r.Items {
		if err := tx.Release(ctx, it.SKU, it.Quantity, now); err != nil {
			return err
		}
	}
	if err := tx.SetReservationStatus(ctx, orderID, Active, Released, now); err != nil {
		return err
	}
	return s.emit(ctx, tx, events.StockReleased, orderID, events.StockReleasedData{OrderID: orderID}, trace, now)
}

func (s *Service) emit(ctx context.Context, tx Tx, t events.Type, orderID string, data any, trace string, now time.Time) error {
	e, err := events.New(Source, t, orderID, data, now)
	if err != nil {
		return err
	}
	e.TraceParent = trace
	return tx.Emit(ctx, e)
}
