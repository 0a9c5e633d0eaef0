package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
)

// Source is the CloudEvents source of every event the order service emits.
const Source = "converge/order"

// Consumer is the inbox name of the order service's consumer.
const Consumer = "order"

// Service runs the order use cases.
type Service struct {
	store   Store
	notify  func() // wakes the outbox relay after a commit
	log     *slog.Logger
	now     func() time.Time
	waiters *waiters
}

// NewService returns a service over store; notify is called after every
// commit that wrote to the outbox.
func NewService(store Store, notify func(), log *slog.Logger) *Service {
	return &Service{store: store, notify: notify, log: log, now: time.Now, waiters: newWaiters()}
}

// Place accepts an order: it is stored PENDING together with its
// order.created event, in one transaction. With an idempotency key, a repeat
// of the same request returns the first order (created is false), and a
// different request under the same key fails with ErrIdempotencyMismatch.
func (s *Service) Place(ctx context.Context, in PlaceInput, key, traceparent string) (o Order, created bool, err error) {
	if err := in.Validate(); err != nil {
		return Order{}, false, err
	}
	hash := requestHash(in)
	// One retry: a concurrent request with the same key may commit between
	// our lookup and our insert; the second pass then finds its order.
	for attempt := 0; ; attempt++ {
		o, created, err = s.place(ctx, in, key, hash, traceparent)
		if errors.Is(err, ErrKeyTaken) && attempt == 0 {
			continue
		}
		if err != nil {
			return Order{}, false, err
		}
		if created {
			s.notify()
		}
		return o, created, nil
	}
}

func (s *Service) place(ctx context.Context, in PlaceInput, key, hash, traceparent string) (o Order, created bool, err error) {
	err = s.store.Update(ctx, func(tx Tx) error {
		if key != "" {
			id, h, found, err := tx.Idempotency(ctx, key)
			if err != nil {
				return err
			}
			if found {
				if h != hash {
					return fmt.Errorf("%w: key %q", ErrIdempotencyMismatch, key)
				}
				o, err = tx.Get(ctx, id)
				return err
			}
		}
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("order id: %w", err)
		}
		now := s.now().UTC()
		o = Order{ID: id.String(), CustomerID: in.CustomerID, Status: Pending, Items: in.Items, CreatedAt: now, UpdatedAt: now}
		if err := tx.Create(ctx, o, key, hash); err != nil {
			return err
		}
		e, err := events.New(Source, events.OrderCreated, o.ID,
			events.OrderCreatedData{OrderID: o.ID, CustomerID: o.CustomerID, Items: toEventItems(o.Items)}, now)
		if err != nil {
			return err
		}
		e.TraceParent = traceparent
		created = true
		return tx.Emit(ctx, e)
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("place order: %w", err)
	}
	return o, created, nil
}

// requestHash identifies a request for the idempotency check. Encoding the
// parsed input (not the raw body) makes whitespace and key order irrelevant.
func requestHash(in PlaceInput) string {
	b, _ := json.Marshal(in) // a struct of strings and ints always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Get returns one order.
func (s *Service) Get(ctx context.Context, id string) (Order, error) {
	o, err := s.store.Get(ctx, id)
	if err != nil {
		return Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, nil
}

// MaxWait bounds how long Wait holds a request.
const MaxWait = 30 * time.Second

// Wait returns the order once it has left PENDING, or its current state
// when d has passed.
func (s *Service) Wait(ctx context.Context, id string, d time.Duration) (Order, error) {
	ctx, cancel := context.WithTimeout(ctx, min(d, MaxWait))
	defer cancel()
	// Polling covers changes made by another instance of the service, which
	// this process is not told about.
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for {
		changed, stop := s.waiters.watch(id)
		o, err := s.Get(context.WithoutCancel(ctx), id)
		if err != nil || o.Status != Pending {
			stop()
			return o, err
		}
		select {
		case <-ctx.Done():
			stop()
			return o, nil
		case <-changed:
		case <-poll.C:
		}
		stop()
	}
}

// Page is one page of a listing; Next is the cursor of the next page, empty
// on the last.
type Page struct {
	Items []Order `json:"items"`
	Next  string  `json:"next"`
}

// Limits of a listing page.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// List returns a page of orders matching f.
func (s *Service) List(ctx context.Context, f Filter) (Page, error) {
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	if f.Limit < 1 || f.Limit > MaxLimit {
		return Page{}, fmt.Errorf("%w: limit must be 1 to %d, got %d", ErrInvalid, MaxLimit, f.Limit)
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	items, err := s.store.List(ctx, f)
	if err != nil {
		return Page{}, fmt.Errorf("list orders: %w", err)
	}
	p := Page{Items: items}
	if len(items) > want {
		p.Items = items[:want]
		p.Next = p.Items[want-1].ID
	}
	if p.Items == nil {
		p.Items = []Order{}
	}
	return p, nil
}

// Cancel cancels a PENDING or CONFIRMED order and asks inventory to release
// what it holds. Cancelling a cancelled order changes nothing (changed is
// false); a rejected order cannot be cancelled (ErrConflict).
func (s *Service) Cancel(ctx context.Context, id, traceparent string) (o Order, changed bool, err error) {
	err = s.store.Update(ctx, func(tx Tx) error {
		o, err = tx.Get(ctx, id)
		if err != nil {
			return err
		}
		switch o.Status {
		case Cancelled:
			return nil
		case Rejected:
			return fmt.Errorf("%w: order %s is REJECTED and cannot be cancelled", ErrConflict, id)
		}
		now := s.now().UTC()
		if err := tx.SetStatus(ctx, id, Cancelled, "", now); err != nil {
			return err
		}
		e, err := events.New(Source, events.OrderCancelled, id, events.OrderCancelledData{OrderID: id}, now)
		if err != nil {
			return err
		}
		e.TraceParent = traceparent
		o.Status, o.UpdatedAt, changed = Cancelled, now, true
		return tx.Emit(ctx, e)
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("cancel order %s: %w", id, err)
	}
	if changed {
		s.notify()
		s.waiters.wake(id)
	}
	return o, changed, nil
}

// Apply applies one reply from inventory. Replies may come twice or out of
// order: the inbox drops repeats, and only a PENDING order moves, so a late
// reservation for a cancelled order changes nothing here (the cancel event
// makes inventory release it).
func (s *Service) Apply(ctx context.Context, e events.Envelope) error {
	var (
		orderID string
		to      Status
		reason  string
	)
	switch e.Type {
	case events.StockReserved:
		var d events.StockReservedData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		orderID, to = d.OrderID, Confirmed
	case events.StockRejected:
		var d events.StockRejectedData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		orderID, to, reason = d.OrderID, Rejected, d.Reason
	case events.StockReleased:
		var d events.StockReleasedData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		orderID = d.OrderID
	default:
		return fmt.Errorf("%w: the order service does not consume %s", events.ErrUnknown, e.Type)
	}
	moved := false
	err := s.store.Update(ctx, func(tx Tx) error {
		fresh, err := tx.Claim(ctx, e)
		if err != nil || !fresh {
			return err
		}
		o, err := tx.Get(ctx, orderID)
		if errors.Is(err, ErrNotFound) {
			// A reply for an order DB A never had: retrying cannot help.
			return fmt.Errorf("%w: %w", events.ErrUnknown, err)
		}
		if err != nil {
			return err
		}
		if to == "" || o.Status != Pending {
			return nil
		}
		moved = true
		return tx.SetStatus(ctx, orderID, to, reason, s.now().UTC())
	})
	if err != nil {
		return fmt.Errorf("apply %s %s to order %s: %w", e.Type, e.ID, orderID, err)
	}
	if moved {
		s.waiters.wake(orderID)
	}
	return nil
}
