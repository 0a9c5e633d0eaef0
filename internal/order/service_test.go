package order_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

type env struct {
	db       *store.DB
	store    *ordersql.Store
	svc      *order.Service
	notified atomic.Int64
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvAt(t, storetest.URL(t, store.SQLite, "orders"))
}

// newEnvAt is an instance of the order service over the database at url;
// several may share one database, as instances of the service do.
func newEnvAt(t testing.TB, url string) *env {
	t.Helper()
	ctx := context.Background()
	db := storetest.OpenURL(t, url)
	st, err := ordersql.Open(ctx, db)
	if err != nil {
		t.Fatalf("ordersql.Open: %v", err)
	}
	e := &env{db: db, store: st}
	e.svc = order.NewService(st, func() { e.notified.Add(1) }, slog.New(slog.DiscardHandler))
	return e
}

// micro truncates o's times to the microseconds the database keeps.
func micro(o order.Order) order.Order {
	o.CreatedAt = o.CreatedAt.Truncate(time.Microsecond)
	o.UpdatedAt = o.UpdatedAt.Truncate(time.Microsecond)
	return o
}

func (e *env) place(t testing.TB, customer string, items ...order.Item) order.Order {
	t.Helper()
	if len(items) == 0 {
		items = []order.Item{{SKU: "A", Quantity: 1}}
	}
	o, created, err := e.svc.Place(context.Background(), order.PlaceInput{CustomerID: customer, Items: items}, "", "")
	if err != nil || !created {
		t.Fatalf("Place: got (%+v, %v, %v), want a created order", o, created, err)
	}
	return o
}

func (e *env) get(t testing.TB, id string) order.Order {
	t.Helper()
	o, err := e.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return o
}

func (e *env) status(t testing.TB, id string) (order.Status, string) {
	t.Helper()
	o := e.get(t, id)
	return o.Status, o.Reason
}

func (e *env) apply(t testing.TB, ev events.Envelope) {
	t.Helper()
	if err := e.svc.Apply(context.Background(), ev); err != nil {
		t.Fatalf("Apply(%s %s): %v", ev.Type, ev.ID, err)
	}
}

func (e *env) cancel(t testing.TB, id string) bool {
	t.Helper()
	o, changed, err := e.svc.Cancel(context.Background(), id, "")
	if err != nil {
		t.Fatalf("Cancel(%s): %v", id, err)
	}
	if o.Status != order.Cancelled {
		t.Fatalf("Cancel(%s): got status %s, want CANCELLED", id, o.Status)
	}
	return changed
}

type outboxRow struct {
	EventType, Subject, TraceParent string
	Event                           events.Envelope
}

func outboxRows(t testing.TB, db *store.DB) []outboxRow {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT event_id, event_type, subject, traceparent, payload FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var (
			r       outboxRow
			id      string
			payload []byte
		)
		if err := rows.Scan(&id, &r.EventType, &r.Subject, &r.TraceParent, &payload); err != nil {
			t.Fatalf("read outbox: %v", err)
		}
		if r.Event, err = events.Decode(payload); err != nil {
			t.Fatalf("outbox row %s: payload does not decode: %v", id, err)
		}
		if r.Event.ID != id {
			t.Errorf("outbox row: event_id %s, payload id %s", id, r.Event.ID)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return out
}

func count(t testing.TB, db *store.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func reply(t testing.TB, typ events.Type, data any) events.Envelope {
	t.Helper()
	var subject string
	switch d := data.(type) {
	case events.StockReservedData:
		subject = d.OrderID
	case events.StockRejectedData:
		subject = d.OrderID
	case events.StockReleasedData:
		subject = d.OrderID
	case events.OrderCreatedData:
		subject = d.OrderID
	case events.OrderCancelledData:
		subject = d.OrderID
	}
	e, err := events.New("converge/inventory", typ, subject, data, time.Now())
	if err != nil {
		t.Fatalf("events.New: %v", err)
	}
	return e
}

func reserved(t testing.TB, id string) events.Envelope {
	t.Helper()
	return reply(t, events.StockReserved, events.StockReservedData{OrderID: id, Items: []events.Item{{SKU: "A", Quantity: 1}}})
}

func rejected(t testing.TB, id, reason string) events.Envelope {
	t.Helper()
	return reply(t, events.StockRejected, events.StockRejectedData{OrderID: id, Reason: reason})
}

func TestPlace(t *testing.T) {
	e := newEnv(t)
	in := order.PlaceInput{CustomerID: "cust-1", Items: []order.Item{{SKU: "B", Quantity: 3}, {SKU: "A", Quantity: 1}}}
	before := time.Now().Add(-time.Second)
	o, created, err := e.svc.Place(context.Background(), in, "", trace)
	if err != nil || !created {
		t.Fatalf("Place: got (%+v, %v, %v), want created", o, created, err)
	}
	if _, err := uuid.Parse(o.ID); err != nil {
		t.Errorf("order id %q is not a UUID: %v", o.ID, err)
	}
	if o.Status != order.Pending || o.CustomerID != in.CustomerID || !reflect.DeepEqual(o.Items, in.Items) || o.Reason != "" {
		t.Errorf("Place returned %+v, want PENDING order of %+v", o, in)
	}
	if o.CreatedAt.Before(before) || !o.CreatedAt.Equal(o.UpdatedAt) {
		t.Errorf("Place times: created %v updated %v, want now and equal", o.CreatedAt, o.UpdatedAt)
	}
	stored := e.get(t, o.ID)
	if !reflect.DeepEqual(stored, micro(o)) {
		t.Errorf("stored order:\n got %+v\nwant %+v", stored, o)
	}

	rows := outboxRows(t, e.db)
	if len(rows) != 1 {
		t.Fatalf("outbox rows: got %d, want 1: %+v", len(rows), rows)
	}
	r := rows[0]
	if r.EventType != string(events.OrderCreated) || r.Subject != "orders.created" || r.TraceParent != trace {
		t.Errorf("outbox row: got type %q subject %q traceparent %q, want %q, orders.created, %q",
			r.EventType, r.Subject, r.TraceParent, events.OrderCreated, trace)
	}
	if r.Event.Subject != o.ID || r.Event.Source != order.Source || r.Event.TraceParent != trace {
		t.Errorf("event: got subject %q source %q traceparent %q, want %q, %q, %q",
			r.Event.Subject, r.Event.Source, r.Event.TraceParent, o.ID, order.Source, trace)
	}
	var d events.OrderCreatedData
	if err := r.Event.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	want := events.OrderCreatedData{OrderID: o.ID, CustomerID: "cust-1", Items: []events.Item{{SKU: "B", Quantity: 3}, {SKU: "A", Quantity: 1}}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("order.created data: got %+v, want %+v", d, want)
	}
	if got := e.notified.Load(); got != 1 {
		t.Errorf("relay notified %d times, want 1", got)
	}
}

// A client that repeats a request under its idempotency key must get the
// same answer as the first time. Place returns the order it built in memory
// (nanosecond times) the first time, and the stored row (microseconds) on a
// repeat, so created_at/updated_at differ between the two responses.
func TestPlaceRepeatReturnsIdenticalOrder(t *testing.T) {
	e := newEnv(t)
	in := order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 2}}}
	var got []order.Order
	for range 2 {
		o, _, err := e.svc.Place(context.Background(), in, "key", "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, o)
	}
	if !reflect.DeepEqual(got[1], got[0]) {
		t.Errorf("repeat Place under the same key:\n got %+v\nwant %+v (the first response)", got[1], got[0])
	}
	if stored := e.get(t, got[0].ID); !reflect.DeepEqual(got[0], stored) {
		t.Errorf("first Place response differs from the stored order:\n got %+v\nwant %+v", got[0], stored)
	}
}

func TestPlaceInvalidStoresNothing(t *testing.T) {
	e := newEnv(t)
	_, created, err := e.svc.Place(context.Background(), order.PlaceInput{CustomerID: "c"}, "k", "")
	if !errors.Is(err, order.ErrInvalid) || created {
		t.Errorf("Place(no items): got (%v, %v), want (false, ErrInvalid)", created, err)
	}
	for _, table := range []string{"orders", "outbox", "idempotency_keys"} {
		if n := count(t, e.db, table); n != 0 {
			t.Errorf("%s rows: got %d, want 0", table, n)
		}
	}
}

func TestPlaceIdempotency(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	in := order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 2}}}
	first, created, err := e.svc.Place(ctx, in, "key-1", "")
	if err != nil || !created {
		t.Fatalf("first Place: got (%v, %v), want created", created, err)
	}

	again, created, err := e.svc.Place(ctx, order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 2}}}, "key-1", "")
	if err != nil || created {
		t.Fatalf("repeat Place: got (%v, %v), want (false, nil)", created, err)
	}
	if !reflect.DeepEqual(micro(again), micro(first)) {
		t.Errorf("repeat Place returned\n %+v\nwant the first order\n %+v", again, first)
	}

	for name, other := range map[string]order.PlaceInput{
		"other quantity": {CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 3}}},
		"other customer": {CustomerID: "d", Items: []order.Item{{SKU: "A", Quantity: 2}}},
		"extra item":     {CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 1}}},
	} {
		o, created, err := e.svc.Place(ctx, other, "key-1", "")
		if !errors.Is(err, order.ErrIdempotencyMismatch) || created || o.ID != "" {
			t.Errorf("Place(%s) under a used key: got (%+v, %v, %v), want ErrIdempotencyMismatch", name, o, created, err)
		}
	}

	if n := count(t, e.db, "orders"); n != 1 {
		t.Errorf("orders: got %d, want 1", n)
	}
	if rows := outboxRows(t, e.db); len(rows) != 1 {
		t.Errorf("outbox rows: got %d, want 1", len(rows))
	}
	if got := e.notified.Load(); got != 1 {
		t.Errorf("relay notified %d times, want 1 (only for the created order)", got)
	}

	// Another key, or no key, is another order.
	other, created, err := e.svc.Place(ctx, in, "key-2", "")
	if err != nil || !created || other.ID == first.ID {
		t.Errorf("Place under another key: got (%s, %v, %v), want a new order", other.ID, created, err)
	}
	for range 2 {
		if _, created, err := e.svc.Place(ctx, in, "", ""); err != nil || !created {
			t.Errorf("Place without key: got (%v, %v), want a new order", created, err)
		}
	}
	if n := count(t, e.db, "orders"); n != 4 {
		t.Errorf("orders: got %d, want 4", n)
	}
	if rows := outboxRows(t, e.db); len(rows) != 4 {
		t.Errorf("outbox rows: got %d, want 4", len(rows))
	}
}

func TestPlaceIdempotencyConcurrent(t *testing.T) {
	e := newEnv(t)
	in := order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 1}}}
	const n = 10
	ids := make(chan string, n)
	errs := make(chan error, n)
	var createdCount atomic.Int64
	for range n {
		go func() {
			o, created, err := e.svc.Place(context.Background(), in, "same-key", "")
			if created {
				createdCount.Add(1)
			}
			ids <- o.ID
			errs <- err
		}()
	}
	seen := map[string]bool{}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Place: %v", err)
		}
		seen[<-ids] = true
	}
	if len(seen) != 1 || createdCount.Load() != 1 {
		t.Errorf("concurrent Place with one key: got ids %v and %d created, want one id created once", seen, createdCount.Load())
	}
	if rows := outboxRows(t, e.db); len(rows) != 1 {
		t.Errorf("outbox rows: got %d, want 1", len(rows))
	}
}

func TestApply(t *testing.T) {
	cases := []struct {
		name       string
		before     func(t testing.TB, e *env, id string)
		event      func(t testing.TB, id string) events.Envelope
		wantStatus order.Status
		wantReason string
	}{
		{
			name:       "reserved confirms",
			event:      reserved,
			wantStatus: order.Confirmed,
		},
		{
			name:       "rejected rejects with reason",
			event:      func(t testing.TB, id string) events.Envelope { return rejected(t, id, events.ReasonInsufficientStock) },
			wantStatus: order.Rejected,
			wantReason: events.ReasonInsufficientStock,
		},
		{
			name:       "rejected for an unknown sku",
			event:      func(t testing.TB, id string) events.Envelope { return rejected(t, id, events.ReasonUnknownSKU) },
			wantStatus: order.Rejected,
			wantReason: events.ReasonUnknownSKU,
		},
		{
			name: "released leaves a pending order alone",
			event: func(t testing.TB, id string) events.Envelope {
				return reply(t, events.StockReleased, events.StockReleasedData{OrderID: id})
			},
			wantStatus: order.Pending,
		},
		{
			name:       "reserved after cancel stays cancelled",
			before:     func(t testing.TB, e *env, id string) { e.cancel(t, id) },
			event:      reserved,
			wantStatus: order.Cancelled,
		},
		{
			name:       "rejected after cancel stays cancelled",
			before:     func(t testing.TB, e *env, id string) { e.cancel(t, id) },
			event:      func(t testing.TB, id string) events.Envelope { return rejected(t, id, events.ReasonUnknownSKU) },
			wantStatus: order.Cancelled,
		},
		{
			name:       "rejected after confirmed stays confirmed",
			before:     func(t testing.TB, e *env, id string) { e.apply(t, reserved(t, id)) },
			event:      func(t testing.TB, id string) events.Envelope { return rejected(t, id, events.ReasonInsufficientStock) },
			wantStatus: order.Confirmed,
		},
		{
			name:       "reserved after rejected stays rejected",
			before:     func(t testing.TB, e *env, id string) { e.apply(t, rejected(t, id, events.ReasonUnknownSKU)) },
			event:      reserved,
			wantStatus: order.Rejected,
			wantReason: events.ReasonUnknownSKU,
		},
		{
			name: "released after confirmed stays confirmed",
			before: func(t testing.TB, e *env, id string) {
				e.apply(t, reserved(t, id))
			},
			event: func(t testing.TB, id string) events.Envelope {
				return reply(t, events.StockReleased, events.StockReleasedData{OrderID: id})
			},
			wantStatus: order.Confirmed,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			o := e.place(t, "c")
			if c.before != nil {
				c.before(t, e, o.ID)
			}
			outboxBefore := len(outboxRows(t, e.db))
			inboxBefore := count(t, e.db, "inbox")
			e.apply(t, c.event(t, o.ID))
			st, reason := e.status(t, o.ID)
			if st != c.wantStatus || reason != c.wantReason {
				t.Errorf("after Apply: got (%s, %q), want (%s, %q)", st, reason, c.wantStatus, c.wantReason)
			}
			if got := count(t, e.db, "inbox"); got != inboxBefore+1 {
				t.Errorf("inbox rows: got %d, want %d", got, inboxBefore+1)
			}
			if got := len(outboxRows(t, e.db)); got != outboxBefore {
				t.Errorf("outbox rows: got %d, want %d (applying a reply emits nothing)", got, outboxBefore)
			}
		})
	}
}

func TestApplySetsUpdatedAt(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	time.Sleep(2 * time.Millisecond)
	e.apply(t, reserved(t, o.ID))
	got := e.get(t, o.ID)
	if !got.UpdatedAt.After(o.UpdatedAt) || !got.CreatedAt.Equal(micro(o).CreatedAt) {
		t.Errorf("after Apply: created %v updated %v, want created %v and updated after it", got.CreatedAt, got.UpdatedAt, o.CreatedAt)
	}
}

func TestApplySameEventTwice(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	ev := rejected(t, o.ID, events.ReasonInsufficientStock)
	e.apply(t, ev)
	first := e.get(t, o.ID)
	time.Sleep(2 * time.Millisecond)
	e.apply(t, ev) // redelivery: no error, no effect
	again := e.get(t, o.ID)
	if !reflect.DeepEqual(again, first) {
		t.Errorf("after the redelivery:\n got %+v\nwant %+v", again, first)
	}
	if n := count(t, e.db, "inbox"); n != 1 {
		t.Errorf("inbox rows: got %d, want 1", n)
	}
}

// The inbox, not the state machine, is what drops a repeat: an event whose
// id is already in the inbox does not move a PENDING order.
func TestApplyClaimedEventDoesNothing(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	ev := reserved(t, o.ID)
	if _, err := e.db.ExecContext(context.Background(), `INSERT INTO inbox (consumer, event_id, event_type, applied_at) VALUES ($1, $2, $3, 1)`,
		order.Consumer, ev.ID, string(ev.Type)); err != nil {
		t.Fatal(err)
	}
	e.apply(t, ev)
	if st, _ := e.status(t, o.ID); st != order.Pending {
		t.Errorf("after applying an event already in the inbox: got %s, want PENDING", st)
	}
	// The same event under a fresh id moves it.
	ev2 := reserved(t, o.ID)
	e.apply(t, ev2)
	if st, _ := e.status(t, o.ID); st != order.Confirmed {
		t.Errorf("after a fresh reserved event: got %s, want CONFIRMED", st)
	}
	if n := count(t, e.db, "inbox"); n != 2 {
		t.Errorf("inbox rows: got %d, want 2", n)
	}
}

func TestApplyErrors(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	unknownID := uuid.Must(uuid.NewV7()).String()
	cases := []struct {
		name string
		ev   events.Envelope
		want []error
	}{
		{"reserved for an unknown order", reserved(t, unknownID), []error{events.ErrUnknown, order.ErrNotFound}},
		{"rejected for an unknown order", rejected(t, unknownID, events.ReasonUnknownSKU), []error{events.ErrUnknown, order.ErrNotFound}},
		{"released for an unknown order", reply(t, events.StockReleased, events.StockReleasedData{OrderID: unknownID}), []error{events.ErrUnknown, order.ErrNotFound}},
		{"order.created is not consumed", reply(t, events.OrderCreated, events.OrderCreatedData{OrderID: o.ID}), []error{events.ErrUnknown}},
		{"order.cancelled is not consumed", reply(t, events.OrderCancelled, events.OrderCancelledData{OrderID: o.ID}), []error{events.ErrUnknown}},
		{"made-up type", func() events.Envelope { ev := reserved(t, o.ID); ev.Type = "io.converge.inventory.shipped"; return ev }(), []error{events.ErrUnknown}},
		{"data without order_id", func() events.Envelope { ev := reserved(t, o.ID); ev.Data = json.RawMessage(`{"items":[]}`); return ev }(), []error{events.ErrMalformed}},
		{"data not an object", func() events.Envelope { ev := reserved(t, o.ID); ev.Data = json.RawMessage(`[1]`); return ev }(), []error{events.ErrMalformed}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := e.svc.Apply(context.Background(), c.ev)
			for _, want := range c.want {
				if !errors.Is(err, want) {
					t.Errorf("Apply: got %v, want an error wrapping %v", err, want)
				}
			}
		})
	}
	if n := count(t, e.db, "inbox"); n != 0 {
		t.Errorf("inbox rows after failed applies: got %d, want 0 (a failed apply keeps no claim)", n)
	}
	if st, _ := e.status(t, o.ID); st != order.Pending {
		t.Errorf("order after failed applies: got %s, want PENDING", st)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	o := e.place(t, "c")
	notifiedBefore := e.notified.Load()

	got, changed, err := e.svc.Cancel(ctx, o.ID, trace)
	if err != nil || !changed || got.Status != order.Cancelled || got.ID != o.ID {
		t.Fatalf("Cancel(PENDING): got (%+v, %v, %v), want (CANCELLED, true, nil)", got, changed, err)
	}
	if st, _ := e.status(t, o.ID); st != order.Cancelled {
		t.Errorf("stored status: got %s, want CANCELLED", st)
	}
	rows := outboxRows(t, e.db)
	cancelled := slices.DeleteFunc(slices.Clone(rows), func(r outboxRow) bool { return r.EventType != string(events.OrderCancelled) })
	if len(rows) != 2 || len(cancelled) != 1 {
		t.Fatalf("outbox: got %d rows (%d order.cancelled), want 2 rows (created, cancelled)", len(rows), len(cancelled))
	}
	r := cancelled[0]
	if r.Subject != "orders.cancelled" || r.Event.Subject != o.ID || r.TraceParent != trace {
		t.Errorf("cancel row: got broker subject %q event subject %q traceparent %q, want orders.cancelled, %s, %s",
			r.Subject, r.Event.Subject, r.TraceParent, o.ID, trace)
	}
	var d events.OrderCancelledData
	if err := r.Event.DecodeData(&d); err != nil || d.OrderID != o.ID {
		t.Errorf("cancel data: got (%+v, %v), want order_id %s", d, err, o.ID)
	}
	if got := e.notified.Load() - notifiedBefore; got != 1 {
		t.Errorf("relay notified %d times by Cancel, want 1", got)
	}

	// Again: nothing changes, nothing is emitted.
	got, changed, err = e.svc.Cancel(ctx, o.ID, "")
	if err != nil || changed || got.Status != order.Cancelled {
		t.Errorf("Cancel(CANCELLED): got (%+v, %v, %v), want (CANCELLED, false, nil)", got, changed, err)
	}
	if n := len(outboxRows(t, e.db)); n != 2 {
		t.Errorf("outbox rows after the second cancel: got %d, want 2", n)
	}
	if got := e.notified.Load() - notifiedBefore; got != 1 {
		t.Errorf("relay notified %d times after two cancels, want 1", got)
	}
}

func TestCancelConfirmed(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	e.apply(t, reserved(t, o.ID))
	if !e.cancel(t, o.ID) {
		t.Errorf("Cancel(CONFIRMED): changed false, want true")
	}
	if st, _ := e.status(t, o.ID); st != order.Cancelled {
		t.Errorf("status: got %s, want CANCELLED", st)
	}
	if n := count(t, e.db, `outbox WHERE event_type = 'io.converge.order.cancelled'`); n != 1 {
		t.Errorf("order.cancelled rows: got %d, want 1", n)
	}
}

func TestCancelRejectedConflicts(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	e.apply(t, rejected(t, o.ID, events.ReasonInsufficientStock))
	got, changed, err := e.svc.Cancel(context.Background(), o.ID, "")
	if !errors.Is(err, order.ErrConflict) || changed || got.ID != "" {
		t.Errorf("Cancel(REJECTED): got (%+v, %v, %v), want ErrConflict", got, changed, err)
	}
	if st, reason := e.status(t, o.ID); st != order.Rejected || reason != events.ReasonInsufficientStock {
		t.Errorf("status: got (%s, %s), want (REJECTED, insufficient_stock)", st, reason)
	}
	if n := len(outboxRows(t, e.db)); n != 1 {
		t.Errorf("outbox rows: got %d, want 1 (only order.created)", n)
	}
}

func TestCancelUnknown(t *testing.T) {
	e := newEnv(t)
	_, changed, err := e.svc.Cancel(context.Background(), uuid.Must(uuid.NewV7()).String(), "")
	if !errors.Is(err, order.ErrNotFound) || changed {
		t.Errorf("Cancel(unknown): got (%v, %v), want ErrNotFound", changed, err)
	}
	if _, err := e.svc.Get(context.Background(), "nope"); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("Get(unknown): got %v, want ErrNotFound", err)
	}
	if n := len(outboxRows(t, e.db)); n != 0 {
		t.Errorf("outbox rows: got %d, want 0", n)
	}
}

func TestWaitReturnsOnApply(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	type result struct {
		o   order.Order
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		o, err := e.svc.Wait(context.Background(), o.ID, 5*time.Second)
		done <- result{o, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond)
	applied := time.Now()
	e.apply(t, reserved(t, o.ID))
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return within 10s")
	}
	if r.err != nil || r.o.Status != order.Confirmed {
		t.Errorf("Wait: got (%s, %v), want (CONFIRMED, nil)", r.o.Status, r.err)
	}
	total, lag := r.at.Sub(start), r.at.Sub(applied)
	t.Logf("Wait returned %s after start, %s after Apply", total, lag)
	if total > 2*time.Second {
		t.Errorf("Wait took %s, want well under its 5s budget", total)
	}
}

func TestWaitReturnsOnCancel(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	done := make(chan order.Order, 1)
	go func() {
		o, _ := e.svc.Wait(context.Background(), o.ID, 5*time.Second)
		done <- o
	}()
	time.Sleep(50 * time.Millisecond)
	e.cancel(t, o.ID)
	select {
	case got := <-done:
		if got.Status != order.Cancelled {
			t.Errorf("Wait: got %s, want CANCELLED", got.Status)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not return within 2s of Cancel")
	}
}

func TestWaitDeadline(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	start := time.Now()
	got, err := e.svc.Wait(context.Background(), o.ID, 150*time.Millisecond)
	took := time.Since(start)
	if err != nil || got.Status != order.Pending || got.ID != o.ID {
		t.Errorf("Wait: got (%+v, %v), want the PENDING order", got, err)
	}
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("Wait took %s, want about 150ms", took)
	}
}

func TestWaitFinalOrderReturnsAtOnce(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	e.apply(t, rejected(t, o.ID, events.ReasonUnknownSKU))
	start := time.Now()
	got, err := e.svc.Wait(context.Background(), o.ID, 5*time.Second)
	if err != nil || got.Status != order.Rejected {
		t.Errorf("Wait: got (%s, %v), want REJECTED", got.Status, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Wait on a final order took %s, want immediate", took)
	}
	if _, err := e.svc.Wait(context.Background(), "nope", time.Second); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("Wait(unknown): got %v, want ErrNotFound", err)
	}
}

func ids(os []order.Order) []string {
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = o.ID
	}
	return out
}

func TestList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var alice, bob []string
	for i := range 5 {
		alice = append(alice, e.place(t, "alice").ID)
		if i < 3 {
			bob = append(bob, e.place(t, "bob").ID)
		}
	}
	all := slices.Sorted(slices.Values(slices.Concat(alice, bob)))
	e.apply(t, reserved(t, alice[1]))
	e.apply(t, reserved(t, bob[0]))
	e.apply(t, rejected(t, alice[2], events.ReasonUnknownSKU))
	e.cancel(t, alice[4])

	cases := []struct {
		name string
		f    order.Filter
		want []string
		next string
	}{
		{"all", order.Filter{}, all, ""},
		{"alice", order.Filter{CustomerID: "alice"}, alice, ""},
		{"bob", order.Filter{CustomerID: "bob"}, bob, ""},
		{"nobody", order.Filter{CustomerID: "carol"}, []string{}, ""},
		{"confirmed", order.Filter{Status: order.Confirmed}, slices.Sorted(slices.Values([]string{alice[1], bob[0]})), ""},
		{"alice confirmed", order.Filter{CustomerID: "alice", Status: order.Confirmed}, []string{alice[1]}, ""},
		{"alice pending", order.Filter{CustomerID: "alice", Status: order.Pending}, []string{alice[0], alice[3]}, ""},
		{"bob pending", order.Filter{CustomerID: "bob", Status: order.Pending}, bob[1:], ""},
		{"rejected", order.Filter{Status: order.Rejected}, []string{alice[2]}, ""},
		{"cancelled", order.Filter{Status: order.Cancelled}, []string{alice[4]}, ""},
		{"alice page 1", order.Filter{CustomerID: "alice", Limit: 2}, alice[:2], alice[1]},
		{"alice page 2", order.Filter{CustomerID: "alice", Limit: 2, After: alice[1]}, alice[2:4], alice[3]},
		{"alice page 3", order.Filter{CustomerID: "alice", Limit: 2, After: alice[3]}, alice[4:], ""},
		{"exact fit has no next", order.Filter{CustomerID: "alice", Limit: 5}, alice, ""},
		{"after the last", order.Filter{After: all[len(all)-1]}, []string{}, ""},
		{"limit 1", order.Filter{Limit: 1}, all[:1], all[0]},
		{"max limit", order.Filter{Limit: order.MaxLimit}, all, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := e.svc.List(ctx, c.f)
			if err != nil {
				t.Fatalf("List(%+v): %v", c.f, err)
			}
			if p.Items == nil {
				t.Errorf("List(%+v): Items is nil, want an empty slice", c.f)
			}
			if got := ids(p.Items); !slices.Equal(got, c.want) || p.Next != c.next {
				t.Errorf("List(%+v):\n got %v next %q\nwant %v next %q", c.f, got, p.Next, c.want, c.next)
			}
			for _, o := range p.Items {
				if (c.f.CustomerID != "" && o.CustomerID != c.f.CustomerID) || (c.f.Status != "" && o.Status != c.f.Status) {
					t.Errorf("List(%+v) returned %+v", c.f, o)
				}
			}
		})
	}

	// Walking every page with Next visits each order once.
	var walked []string
	f := order.Filter{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := e.svc.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, ids(p.Items)...)
		if p.Next == "" {
			break
		}
		f.After = p.Next
	}
	if !slices.Equal(walked, all) {
		t.Errorf("paging by 3: got %v, want %v", walked, all)
	}

	for _, limit := range []int{-1, order.MaxLimit + 1, 1 << 30} {
		if _, err := e.svc.List(ctx, order.Filter{Limit: limit}); !errors.Is(err, order.ErrInvalid) {
			t.Errorf("List(limit %d): got %v, want ErrInvalid", limit, err)
		}
	}
}

func TestListDefaultLimit(t *testing.T) {
	e := newEnv(t)
	for range order.DefaultLimit + 1 {
		e.place(t, "c")
	}
	p, err := e.svc.List(context.Background(), order.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != order.DefaultLimit || p.Next != p.Items[len(p.Items)-1].ID {
		t.Errorf("List with no limit: got %d items next %q, want %d items and a next cursor", len(p.Items), p.Next, order.DefaultLimit)
	}
}

// Wait also polls every 250ms (for changes made by another instance), so a
// change made ~300ms in leaves ~200ms to the next poll: returning well
// before that proves this process woke the waiter.
func TestWaitIsWokenNotPolled(t *testing.T) {
	cases := []struct {
		name string
		move func(t testing.TB, e *env, id string)
		want order.Status
	}{
		{"Apply", func(t testing.TB, e *env, id string) { e.apply(t, reserved(t, id)) }, order.Confirmed},
		{"ApplyBatch", func(t testing.TB, e *env, id string) {
			if errs := e.svc.ApplyBatch(context.Background(), []events.Envelope{rejected(t, id, "x")}); errs[0] != nil {
				t.Fatal(errs[0])
			}
		}, order.Rejected},
		{"Cancel", func(t testing.TB, e *env, id string) { e.cancel(t, id) }, order.Cancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			o := e.place(t, "c")
			done := make(chan order.Order, 1)
			go func() {
				got, _ := e.svc.Wait(context.Background(), o.ID, 5*time.Second)
				done <- got
			}()
			time.Sleep(300 * time.Millisecond)
			moved := time.Now()
			c.move(t, e, o.ID)
			select {
			case got := <-done:
				lag := time.Since(moved)
				t.Logf("Wait returned %s after the change", lag)
				if got.Status != c.want {
					t.Errorf("Wait: got %s, want %s", got.Status, c.want)
				}
				if lag > 120*time.Millisecond {
					t.Errorf("Wait returned %s after the change, want well under the ~200ms left to its next poll", lag)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return")
			}
		})
	}
}
