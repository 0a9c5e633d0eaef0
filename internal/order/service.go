package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/telemetry"
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
	// waitPoll is how often a Wait reads the order again, for changes
	// made by another instance that it is not told of.
	waitPoll time.Duration
	placer   placer

	drainOnce sync.Once
	draining  chan struct{} // closed by Drain

	// changed, if set, tells the other instances which orders this one
	// changed, so that their Waits wake too (see OnChange).
	changed func(ids []string)
	// final, if set, is told of every order this instance moved out of
	// PENDING (see OnFinal).
	final func(to Status, createdAt time.Time)
}

// OnFinal makes the service call f after each commit that moved an order
// out of PENDING (a reply applied, or a cancel), with the order's new
// status and when it was placed. Metrics use it for order -> final latency.
func (s *Service) OnFinal(f func(to Status, createdAt time.Time)) { s.final = f }

// reportFinal tells OnFinal's f about orders whose move out of PENDING
// committed, each as its transaction left it.
func (s *Service) reportFinal(moved []Order) {
	if s.final == nil {
		return
	}
	for _, o := range moved {
		s.final(o.Status, o.CreatedAt)
	}
}

// OnChange makes the service call f with the ids of the orders each commit
// changed, after the commit. Other instances of the service pass them to
// Wake, so that a GET ?wait= held on any instance answers at once; without
// it, Wait notices another instance's change by polling.
func (s *Service) OnChange(f func(ids []string)) { s.changed = f }

// Wake wakes the Waits held on this instance for ids: another instance
// changed those orders.
func (s *Service) Wake(ids ...string) {
	for _, id := range ids {
		s.waiters.wake(id)
	}
}

// NewService returns a service over store; notify is called after every
// commit that wrote to the outbox.
func NewService(store Store, notify func(), log *slog.Logger) *Service {
	return &Service{store: store, notify: notify, log: log, now: time.Now, waiters: newWaiters(), waitPoll: 250 * time.Millisecond, draining: make(chan struct{})}
}

// Place accepts an order: it is stored PENDING together with its
// order.created event, in one transaction. With an idempotency key, a repeat
// of the same request returns the first order (created is false), and a
// different request under the same key fails with ErrIdempotencyMismatch.
//
// Concurrent calls share transactions (group commit, see placer), so many
// orders cost one commit.
func (s *Service) Place(ctx context.Context, in PlaceInput, key, traceparent string) (o Order, created bool, err error) {
	if err := in.Validate(); err != nil {
		return Order{}, false, err
	}
	p := &placement{in: in, key: key, hash: requestHash(in), trace: traceparent, at: s.now().UTC().Truncate(time.Microsecond)}
	s.placer.submit(ctx, p, s.placeBatch)
	if p.err != nil {
		return Order{}, false, fmt.Errorf("place order: %w", p.err)
	}
	return p.order, p.created, nil
}

// placeBatch stores a batch of placements in one transaction. If that
// transaction fails, each placement gets a transaction of its own, so one
// failure does not fail the others.
func (s *Service) placeBatch(ctx context.Context, batch []*placement) {
	err := s.store.Update(ctx, func(tx Tx) error {
		for _, p := range batch {
			p.order, p.created, p.err = s.placeIn(ctx, tx, p)
			if p.err != nil && !errors.Is(p.err, ErrIdempotencyMismatch) {
				return p.err // a mismatch wrote nothing; anything else aborts
			}
		}
		return nil
	})
	switch {
	case err == nil:
	case len(batch) == 1 && !errors.Is(err, ErrKeyTaken):
		batch[0].created, batch[0].err = false, err // alone already: retrying cannot help
	default:
		for _, p := range batch {
			s.placeAlone(ctx, p)
		}
	}
	for _, p := range batch {
		if p.created {
			s.notify()
			return
		}
	}
}

// placeAlone stores one placement in its own transaction, once more if a
// concurrent transaction took its idempotency key first (the second pass
// then finds that order).
func (s *Service) placeAlone(ctx context.Context, p *placement) {
	for attempt := 0; attempt < 2; attempt++ {
		p.err = s.store.Update(ctx, func(tx Tx) error {
			var err error
			p.order, p.created, err = s.placeIn(ctx, tx, p)
			return err
		})
		if !errors.Is(p.err, ErrKeyTaken) {
			break
		}
	}
	if p.err != nil {
		p.created = false
	}
}

// placeIn stores one placement inside tx. The transaction serves a whole
// batch: what it does for p is done under p's trace.
func (s *Service) placeIn(ctx context.Context, tx Tx, p *placement) (o Order, created bool, err error) {
	ctx = telemetry.WithTraceParent(ctx, p.trace)
	if p.key != "" {
		id, h, found, err := tx.Idempotency(ctx, p.key)
		if err != nil {
			return Order{}, false, err
		}
		if found {
			if h != p.hash {
				return Order{}, false, fmt.Errorf("%w: key %q", ErrIdempotencyMismatch, p.key)
			}
			o, err = tx.Get(ctx, id)
			return o, false, err
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Order{}, false, fmt.Errorf("order id: %w", err)
	}
	now := s.now().UTC().Truncate(time.Microsecond) // what the database keeps
	o = Order{ID: id.String(), CustomerID: p.in.CustomerID, Status: Pending, Items: p.in.Items, CreatedAt: now, UpdatedAt: now}
	if err := tx.Create(ctx, o, p.at, p.key, p.hash); err != nil {
		return Order{}, false, err
	}
	e, err := events.New(Source, events.OrderCreated, o.ID,
		events.OrderCreatedData{OrderID: o.ID, CustomerID: o.CustomerID, Items: toEventItems(o.Items)}, now)
	if err != nil {
		return Order{}, false, err
	}
	e.TraceParent = p.trace
	return o, true, tx.Emit(ctx, e)
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
	poll := time.NewTicker(s.waitPoll)
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
		case <-s.draining:
			stop()
			return o, nil
		case <-changed.done:
			// A commit of this process moved the order and said how:
			// that is the answer, with no second read.
			if changed.order != nil && changed.order.Status != Pending {
				stop()
				return *changed.order, nil
			}
		case <-poll.C:
		}
		stop()
	}
}

// Drain makes every Wait, held now or later, answer at once with the
// order's current state, so that a shutdown need not wait for long polls.
func (s *Service) Drain() {
	s.drainOnce.Do(func() { close(s.draining) })
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
	var wasPending bool
	err = s.store.Update(ctx, func(tx Tx) error {
		changed = false // a transaction run again starts over
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
		now := s.now().UTC().Truncate(time.Microsecond)
		if err := tx.SetStatus(ctx, id, o.Status, Cancelled, "", now); err != nil {
			return err
		}
		e, err := events.New(Source, events.OrderCancelled, id, events.OrderCancelledData{OrderID: id}, now)
		if err != nil {
			return err
		}
		e.TraceParent = traceparent
		wasPending = o.Status == Pending
		o.Status, o.Reason, o.UpdatedAt, changed = Cancelled, "", now, true
		return tx.Emit(ctx, e)
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("cancel order %s: %w", id, err)
	}
	if changed {
		if wasPending {
			s.reportFinal([]Order{o})
		}
		s.notify()
		s.waiters.settle(o)
		if s.changed != nil {
			s.changed([]string{id})
		}
	}
	return o, changed, nil
}

// Apply applies one reply from inventory.
func (s *Service) Apply(ctx context.Context, e events.Envelope) error {
	return s.ApplyBatch(ctx, []events.Envelope{e})[0]
}

// ApplyBatch applies replies from inventory in one transaction, and returns
// one error per event. Replies may come twice or out of order: the inbox
// drops repeats, and only a PENDING order moves, so a late reservation for
// a cancelled order changes nothing here (the cancel event makes inventory
// release it).
func (s *Service) ApplyBatch(ctx context.Context, es []events.Envelope) []error {
	var (
		touched []string
		// finals collects what the transaction running now moved out of
		// PENDING; committed, what the committed ones did.
		finals, committed []Order
	)
	update := func(ctx context.Context, fn func(Tx) error) error {
		err := s.store.Update(ctx, func(tx Tx) error {
			finals = finals[:0] // a transaction run again starts over
			return fn(tx)
		})
		if err == nil {
			committed = append(committed, finals...)
		}
		return err
	}
	errs := inbox.ApplyBatch(ctx, update, es, func(ctx context.Context, tx Tx, e events.Envelope) error {
		id, moved, err := s.apply(ctx, tx, e)
		touched = append(touched, id)
		if err == nil && moved.Status != "" {
			finals = append(finals, moved)
		}
		return err
	})
	s.reportFinal(committed)
	// The Waits for orders the batch moved get them as committed; the
	// others are woken to read theirs again (waking one whose order did
	// not move, its transaction rolled back, is harmless).
	for _, o := range committed {
		s.waiters.settle(o)
	}
	s.Wake(touched...)
	if s.changed != nil && len(touched) > 0 {
		s.changed(touched)
	}
	return errs
}

// apply applies one reply in tx. When it moves the order out of PENDING,
// moved is the order as tx leaves it; otherwise moved is the zero Order.
func (s *Service) apply(ctx context.Context, tx Tx, e events.Envelope) (orderID string, moved Order, err error) {
	ctx = telemetry.WithTraceParent(ctx, e.TraceParent) // the batch's transaction, under this event's trace
	var (
		to     Status
		reason string
	)
	switch e.Type {
	case events.StockReserved:
		var d events.StockReservedData
		if err := e.DecodeData(&d); err != nil {
			return "", Order{}, err
		}
		orderID, to = d.OrderID, Confirmed
	case events.StockRejected:
		var d events.StockRejectedData
		if err := e.DecodeData(&d); err != nil {
			return "", Order{}, err
		}
		orderID, to, reason = d.OrderID, Rejected, d.Reason
	case events.StockReleased:
		var d events.StockReleasedData
		if err := e.DecodeData(&d); err != nil {
			return "", Order{}, err
		}
		orderID = d.OrderID
	default:
		return "", Order{}, fmt.Errorf("%w: the order service does not consume %s", events.ErrUnknown, e.Type)
	}
	fresh, err := tx.Claim(ctx, e)
	if err != nil || !fresh {
		return orderID, Order{}, err
	}
	o, err := tx.Get(ctx, orderID)
	if errors.Is(err, ErrNotFound) {
		// A reply for an order DB A never had: retrying cannot help.
		return orderID, Order{}, fmt.Errorf("%w: %w", events.ErrUnknown, err)
	}
	if err != nil || to == "" || o.Status != Pending {
		return orderID, Order{}, err
	}
	at := s.now().UTC().Truncate(time.Microsecond) // as the database keeps it
	if err := tx.SetStatus(ctx, orderID, Pending, to, reason, at); err != nil {
		return orderID, Order{}, err
	}
	o.Status, o.Reason, o.UpdatedAt = to, reason, at
	return orderID, o, nil
}
