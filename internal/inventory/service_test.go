package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

type env struct {
	db       *store.DB
	st       *inventorysql.Store
	svc      *inventory.Service
	notified atomic.Int64
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, "inventory")
	st, err := inventorysql.Open(ctx, db)
	if err != nil {
		t.Fatalf("inventorysql.Open: %v", err)
	}
	e := &env{db: db, st: st}
	e.svc = inventory.NewService(st, func() { e.notified.Add(1) }, slog.New(slog.DiscardHandler))
	return e
}

func (e *env) stock(t testing.TB, sku string, onHand int64) {
	t.Helper()
	if _, err := e.svc.SetStock(context.Background(), sku, onHand); err != nil {
		t.Fatalf("SetStock(%s, %d): %v", sku, onHand, err)
	}
}

// level returns on_hand and reserved of sku.
func (e *env) level(t testing.TB, sku string) (onHand, reserved int64) {
	t.Helper()
	it, err := e.svc.Get(context.Background(), sku)
	if err != nil {
		t.Fatalf("Get(%s): %v", sku, err)
	}
	if it.Available != it.OnHand-it.Reserved {
		t.Errorf("Get(%s): available %d, want on_hand %d - reserved %d", sku, it.Available, it.OnHand, it.Reserved)
	}
	return it.OnHand, it.Reserved
}

func (e *env) wantLevel(t testing.TB, sku string, onHand, reserved int64) {
	t.Helper()
	gotOn, gotRes := e.level(t, sku)
	if gotOn != onHand || gotRes != reserved {
		t.Errorf("%s: got on_hand %d reserved %d, want on_hand %d reserved %d", sku, gotOn, gotRes, onHand, reserved)
	}
}

func (e *env) apply(t testing.TB, ev events.Envelope) {
	t.Helper()
	if err := e.svc.Apply(context.Background(), ev); err != nil {
		t.Fatalf("Apply(%s %s): %v", ev.Type, ev.ID, err)
	}
}

func (e *env) reservation(t testing.TB, orderID string) (inventory.Reservation, bool) {
	t.Helper()
	var (
		r     inventory.Reservation
		found bool
	)
	err := e.st.Update(context.Background(), func(tx inventory.Tx) error {
		var err error
		r, found, err = tx.Reservation(context.Background(), orderID)
		return err
	})
	if err != nil {
		t.Fatalf("Reservation(%s): %v", orderID, err)
	}
	return r, found
}

// emitted is one outbox row: its event type, broker subject, and the
// CloudEvents subject and data of its payload.
type emitted struct {
	Type, Subject, OrderID string
	Event                  events.Envelope
}

func outbox(t testing.TB, db *store.DB) []emitted {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT event_id, event_type, subject, payload FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var out []emitted
	for rows.Next() {
		var (
			r       emitted
			id      string
			payload []byte
		)
		if err := rows.Scan(&id, &r.Type, &r.Subject, &payload); err != nil {
			t.Fatal(err)
		}
		if r.Event, err = events.Decode(payload); err != nil {
			t.Fatalf("outbox row %s does not decode: %v", id, err)
		}
		if r.Event.ID != id || string(r.Event.Type) != r.Type || r.Event.BrokerSubject() != r.Subject || r.Event.Source != inventory.Source {
			t.Errorf("outbox row %s (%s on %s) does not match its payload %+v", id, r.Type, r.Subject, r.Event)
		}
		r.OrderID = r.Event.Subject
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantOutbox checks the outbox holds exactly want, as "type subject order".
func wantOutbox(t testing.TB, db *store.DB, want ...string) []emitted {
	t.Helper()
	rows := outbox(t, db)
	var got []string
	for _, r := range rows {
		got = append(got, r.Type+" "+r.Subject+" "+r.OrderID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("outbox:\n got %q\nwant %q", got, want)
	}
	return rows
}

func row(typ events.Type, orderID string) string {
	subject := map[events.Type]string{
		events.StockReserved: "inventory.reserved",
		events.StockRejected: "inventory.rejected",
		events.StockReleased: "inventory.released",
	}[typ]
	return string(typ) + " " + subject + " " + orderID
}

func newOrderID() string { return uuid.Must(uuid.NewV7()).String() }

func created(t testing.TB, orderID string, items ...events.Item) events.Envelope {
	t.Helper()
	e, err := events.New("converge/order", events.OrderCreated, orderID,
		events.OrderCreatedData{OrderID: orderID, CustomerID: "c", Items: items}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func cancelled(t testing.TB, orderID string) events.Envelope {
	t.Helper()
	e, err := events.New("converge/order", events.OrderCancelled, orderID, events.OrderCancelledData{OrderID: orderID}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func item(sku string, qty int) events.Item { return events.Item{SKU: sku, Quantity: qty} }

func TestValidateStock(t *testing.T) {
	cases := []struct {
		sku    string
		onHand int64
		ok     bool
	}{
		{"A", 0, true},
		{"a-b_c.9", 5, true},
		{strings.Repeat("s", 64), inventory.MaxOnHand, true},
		{strings.Repeat("s", 65), 1, false},
		{"", 1, false},
		{"a b", 1, false},
		{"ä", 1, false},
		{"A", -1, false},
		{"A", inventory.MaxOnHand + 1, false},
	}
	for _, c := range cases {
		err := inventory.ValidateStock(c.sku, c.onHand)
		if c.ok && err != nil {
			t.Errorf("ValidateStock(%q, %d): got %v, want nil", c.sku, c.onHand, err)
		}
		if !c.ok && !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("ValidateStock(%q, %d): got %v, want ErrInvalid", c.sku, c.onHand, err)
		}
	}
}

func TestSetStock(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	for _, bad := range []struct {
		sku    string
		onHand int64
	}{{"", 1}, {"x y", 1}, {"A", -1}, {"A", inventory.MaxOnHand + 1}} {
		if _, err := e.svc.SetStock(ctx, bad.sku, bad.onHand); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("SetStock(%q, %d): got %v, want ErrInvalid", bad.sku, bad.onHand, err)
		}
	}
	if n := count(t, e.db, "stock"); n != 0 {
		t.Errorf("stock rows after invalid requests: got %d, want 0", n)
	}

	it, err := e.svc.SetStock(ctx, "A", 10)
	if err != nil {
		t.Fatal(err)
	}
	if it.SKU != "A" || it.OnHand != 10 || it.Reserved != 0 || it.Available != 10 || it.UpdatedAt.IsZero() {
		t.Errorf("SetStock(create): got %+v, want A with 10 on hand", it)
	}
	if got, _ := e.svc.Get(ctx, "A"); !reflect.DeepEqual(got, it) {
		t.Errorf("Get after create: got %+v, want %+v", got, it)
	}

	it2, err := e.svc.SetStock(ctx, "A", 4)
	if err != nil {
		t.Fatal(err)
	}
	if it2.OnHand != 4 || it2.Available != 4 || it2.UpdatedAt.Before(it.UpdatedAt) {
		t.Errorf("SetStock(update): got %+v, want 4 on hand", it2)
	}
	e.wantLevel(t, "A", 4, 0)

	// Reserve 3, then on_hand below reserved conflicts and changes nothing.
	e.apply(t, created(t, newOrderID(), item("A", 3)))
	e.wantLevel(t, "A", 4, 3)
	if _, err := e.svc.SetStock(ctx, "A", 2); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("SetStock(on_hand 2 < reserved 3): got %v, want ErrConflict", err)
	}
	e.wantLevel(t, "A", 4, 3)
	if it, err := e.svc.SetStock(ctx, "A", 3); err != nil || it.Available != 0 || it.Reserved != 3 {
		t.Errorf("SetStock(on_hand 3 == reserved 3): got (%+v, %v), want 0 available", it, err)
	}
	if _, err := e.svc.SetStock(ctx, "A", 0); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("SetStock(on_hand 0 < reserved 3): got %v, want ErrConflict", err)
	}
	e.wantLevel(t, "A", 3, 3)

	if _, err := e.svc.Get(ctx, "nope"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("Get(unknown): got %v, want ErrNotFound", err)
	}
}

func count(t testing.TB, db *store.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestList(t *testing.T) {
	e := newEnv(t)
	skus := []string{"A", "B", "C", "D", "E"}
	for _, s := range slices.Backward(skus) {
		e.stock(t, s, 1)
	}
	var walked []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p, err := e.svc.List(context.Background(), after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			walked = append(walked, it.SKU)
		}
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	if !slices.Equal(walked, skus) {
		t.Errorf("paging by 2: got %v, want %v", walked, skus)
	}
	if p, err := e.svc.List(context.Background(), "E", 0); err != nil || p.Items == nil || len(p.Items) != 0 || p.Next != "" {
		t.Errorf("List after the last: got (%+v, %v), want an empty page", p, err)
	}
	for _, limit := range []int{-1, inventory.MaxLimit + 1} {
		if _, err := e.svc.List(context.Background(), "", limit); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("List(limit %d): got %v, want ErrInvalid", limit, err)
		}
	}
}

func TestApplyCreated(t *testing.T) {
	type level struct{ onHand, reserved int64 }
	cases := []struct {
		name       string
		items      []events.Item
		wantType   events.Type
		wantReason string
		want       map[string]level
	}{
		{
			name:     "all available",
			items:    []events.Item{item("B", 2), item("A", 5)},
			wantType: events.StockReserved,
			want:     map[string]level{"A": {10, 5}, "B": {3, 2}, "C": {0, 0}},
		},
		{
			name:     "takes the last unit",
			items:    []events.Item{item("A", 10), item("B", 3)},
			wantType: events.StockReserved,
			want:     map[string]level{"A": {10, 10}, "B": {3, 3}, "C": {0, 0}},
		},
		{
			name:       "one insufficient item rejects all",
			items:      []events.Item{item("A", 5), item("B", 4)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonInsufficientStock,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
		{
			name:       "out of stock sku",
			items:      []events.Item{item("C", 1)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonInsufficientStock,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
		{
			name:       "unknown sku",
			items:      []events.Item{item("A", 1), item("ZZZ", 1)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonUnknownSKU,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
		{
			name:       "unknown sku wins over insufficient stock",
			items:      []events.Item{item("0-unknown", 1), item("B", 100)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonUnknownSKU,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
		{
			name:       "unknown sku after insufficient stock",
			items:      []events.Item{item("B", 100), item("ZZZ", 1)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonUnknownSKU,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
		{
			name:       "unknown sku sorted first",
			items:      []events.Item{item("B", 1), item("0-unknown", 1)},
			wantType:   events.StockRejected,
			wantReason: events.ReasonUnknownSKU,
			want:       map[string]level{"A": {10, 0}, "B": {3, 0}, "C": {0, 0}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.stock(t, "A", 10)
			e.stock(t, "B", 3)
			e.stock(t, "C", 0)
			id := newOrderID()
			ev := created(t, id, c.items...)
			ev.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			e.apply(t, ev)
			for sku, l := range c.want {
				e.wantLevel(t, sku, l.onHand, l.reserved)
			}
			rows := wantOutbox(t, e.db, row(c.wantType, id))
			if len(rows) != 1 {
				return
			}
			out := rows[0].Event
			if out.TraceParent != ev.TraceParent {
				t.Errorf("reply traceparent: got %q, want %q", out.TraceParent, ev.TraceParent)
			}
			r, found := e.reservation(t, id)
			switch c.wantType {
			case events.StockReserved:
				var d events.StockReservedData
				if err := out.DecodeData(&d); err != nil || d.OrderID != id || !reflect.DeepEqual(d.Items, c.items) {
					t.Errorf("reserved data: got (%+v, %v), want order %s items %v", d, err, id, c.items)
				}
				sorted := slices.SortedFunc(slices.Values(c.items), func(a, b events.Item) int { return strings.Compare(a.SKU, b.SKU) })
				if !found || r.Status != inventory.Active || !reflect.DeepEqual(r.Items, sorted) {
					t.Errorf("reservation: got (%+v, %v), want active with %v", r, found, sorted)
				}
			case events.StockRejected:
				var d events.StockRejectedData
				if err := out.DecodeData(&d); err != nil || d.OrderID != id || d.Reason != c.wantReason {
					t.Errorf("rejected data: got (%+v, %v), want order %s reason %s", d, err, id, c.wantReason)
				}
				if !found || r.Status != inventory.Refused || r.Reason != c.wantReason || len(r.Items) != 0 {
					t.Errorf("reservation: got (%+v, %v), want rejected for %s with no items", r, found, c.wantReason)
				}
			}
			if n := e.notified.Load(); n != 1 {
				t.Errorf("relay notified %d times, want 1 (after the Apply that emitted)", n)
			}
		})
	}
}

func TestApplyCreatedTwice(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 10)
	id := newOrderID()
	ev := created(t, id, item("A", 4))
	e.apply(t, ev)
	e.apply(t, ev) // redelivery of the same event
	e.wantLevel(t, "A", 10, 4)
	wantOutbox(t, e.db, row(events.StockReserved, id))
	if n := count(t, e.db, "inbox"); n != 1 {
		t.Errorf("inbox rows: got %d, want 1", n)
	}

	// The order service publishing the order twice under two event ids: the
	// reservation exists, so nothing more is reserved or emitted.
	e.apply(t, created(t, id, item("A", 4)))
	e.wantLevel(t, "A", 10, 4)
	wantOutbox(t, e.db, row(events.StockReserved, id))
	if n := count(t, e.db, "inbox"); n != 2 {
		t.Errorf("inbox rows: got %d, want 2", n)
	}
}

func TestApplyCreatedAgainAfterReject(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 1)
	id := newOrderID()
	e.apply(t, created(t, id, item("A", 2)))
	e.stock(t, "A", 5)
	// Stock arrived meanwhile, but the order was decided: rejected stays.
	e.apply(t, created(t, id, item("A", 2)))
	e.wantLevel(t, "A", 5, 0)
	wantOutbox(t, e.db, row(events.StockRejected, id))
}

func TestCancelBeforeCreated(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 10)
	id := newOrderID()
	e.apply(t, cancelled(t, id))
	if r, found := e.reservation(t, id); !found || r.Status != inventory.Cancelled {
		t.Errorf("reservation after an early cancel: got (%+v, %v), want a cancelled marker", r, found)
	}
	e.apply(t, created(t, id, item("A", 3)))
	e.wantLevel(t, "A", 10, 0)
	wantOutbox(t, e.db /* nothing */)
	if r, _ := e.reservation(t, id); r.Status != inventory.Cancelled || len(r.Items) != 0 {
		t.Errorf("reservation after the late created: got %+v, want cancelled with no items", r)
	}
	// Cancelling again changes nothing either.
	e.apply(t, cancelled(t, id))
	e.wantLevel(t, "A", 10, 0)
	wantOutbox(t, e.db)
}

func TestCancelAfterReserve(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 10)
	e.stock(t, "B", 5)
	id, other := newOrderID(), newOrderID()
	e.apply(t, created(t, id, item("A", 4), item("B", 5)))
	e.apply(t, created(t, other, item("A", 1)))
	e.wantLevel(t, "A", 10, 5)
	e.wantLevel(t, "B", 5, 5)

	cancel := cancelled(t, id)
	cancel.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.apply(t, cancel)
	e.wantLevel(t, "A", 10, 1) // the other order keeps its unit
	e.wantLevel(t, "B", 5, 0)
	rows := wantOutbox(t, e.db, row(events.StockReserved, id), row(events.StockReserved, other), row(events.StockReleased, id))
	if len(rows) == 3 {
		var d events.StockReleasedData
		if err := rows[2].Event.DecodeData(&d); err != nil || d.OrderID != id {
			t.Errorf("released data: got (%+v, %v), want order %s", d, err, id)
		}
		if rows[2].Event.TraceParent != cancel.TraceParent {
			t.Errorf("released traceparent: got %q, want %q", rows[2].Event.TraceParent, cancel.TraceParent)
		}
	}
	if r, _ := e.reservation(t, id); r.Status != inventory.Released {
		t.Errorf("reservation: got %s, want released", r.Status)
	}

	// Twice: the same event redelivered, and a second cancel event.
	e.apply(t, cancel)
	e.apply(t, cancelled(t, id))
	e.wantLevel(t, "A", 10, 1)
	e.wantLevel(t, "B", 5, 0)
	wantOutbox(t, e.db, row(events.StockReserved, id), row(events.StockReserved, other), row(events.StockReleased, id))

	// A created arriving after the release reserves nothing.
	e.apply(t, created(t, id, item("A", 4)))
	e.wantLevel(t, "A", 10, 1)

	// The released stock can be reserved again.
	third := newOrderID()
	e.apply(t, created(t, third, item("B", 5)))
	e.wantLevel(t, "B", 5, 5)
}

func TestCancelRejected(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 1)
	id := newOrderID()
	e.apply(t, created(t, id, item("A", 2)))
	e.apply(t, cancelled(t, id))
	e.wantLevel(t, "A", 1, 0)
	wantOutbox(t, e.db, row(events.StockRejected, id))
	if r, _ := e.reservation(t, id); r.Status != inventory.Refused {
		t.Errorf("reservation: got %s, want rejected", r.Status)
	}
}

func TestApplyErrors(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 10)
	id := newOrderID()
	withData := func(ev events.Envelope, data string) events.Envelope { ev.Data = []byte(data); return ev }
	reservedEv, err := events.New("converge/inventory", events.StockReserved, id, events.StockReservedData{OrderID: id}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ev   events.Envelope
		want error
	}{
		{"inventory's own event", reservedEv, events.ErrUnknown},
		{"made-up type", func() events.Envelope { ev := created(t, id, item("A", 1)); ev.Type = "x"; return ev }(), events.ErrUnknown},
		{"created without order_id", withData(created(t, id), `{"items":[{"sku":"A","quantity":1}]}`), events.ErrMalformed},
		{"cancelled without order_id", withData(cancelled(t, id), `{}`), events.ErrMalformed},
		{"created with no items", created(t, id), events.ErrMalformed},
		{"created with quantity 0", created(t, id, item("A", 0)), events.ErrMalformed},
		{"created with negative quantity", created(t, id, item("A", -3)), events.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := e.svc.Apply(context.Background(), c.ev); !errors.Is(err, c.want) {
				t.Errorf("Apply: got %v, want an error wrapping %v", err, c.want)
			}
		})
	}
	e.wantLevel(t, "A", 10, 0)
	wantOutbox(t, e.db)
	for _, table := range []string{"inbox", "reservations"} {
		if n := count(t, e.db, table); n != 0 {
			t.Errorf("%s rows after failed applies: got %d, want 0", table, n)
		}
	}
}

func TestConcurrentReservations(t *testing.T) {
	e := newEnv(t)
	const stock, orders = 20, 50
	e.stock(t, "HOT", stock)

	stop := make(chan struct{})
	var watcher sync.WaitGroup
	var lowest atomic.Int64
	lowest.Store(stock)
	watcher.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			it, err := e.svc.Get(context.Background(), "HOT")
			if err != nil {
				t.Errorf("Get: %v", err)
				return
			}
			if it.Available < lowest.Load() {
				lowest.Store(it.Available)
			}
			if it.Reserved > it.OnHand {
				t.Errorf("observed reserved %d > on_hand %d", it.Reserved, it.OnHand)
			}
		}
	})

	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range orders {
		wg.Go(func() {
			<-start
			id := fmt.Sprintf("order-%02d", i)
			if err := e.svc.Apply(context.Background(), created(t, id, item("HOT", 1))); err != nil {
				t.Errorf("Apply(%s): %v", id, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(stop)
	watcher.Wait()

	e.wantLevel(t, "HOT", stock, stock)
	if l := lowest.Load(); l < 0 {
		t.Errorf("available went down to %d, want never below 0", l)
	}
	kinds := map[string]int{}
	for _, r := range outbox(t, e.db) {
		kinds[r.Type]++
	}
	want := map[string]int{string(events.StockReserved): stock, string(events.StockRejected): orders - stock}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("outbox by type: got %v, want %v", kinds, want)
	}
	var active, refused int
	if err := e.db.QueryRowContext(context.Background(), `SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'rejected') FROM reservations`).Scan(&active, &refused); err != nil {
		t.Fatal(err)
	}
	var held int
	if err := e.db.QueryRowContext(context.Background(), `SELECT coalesce(sum(quantity), 0) FROM reservation_items WHERE sku = 'HOT'`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if active != stock || refused != orders-stock || held != stock {
		t.Errorf("reservations: got %d active %d rejected holding %d units, want %d, %d, %d", active, refused, held, stock, orders-stock, stock)
	}
}

// An order.created that lists a SKU twice is refused as malformed: reserving
// it item by item would over-reserve, or record one line and leak the other
// on release.
func TestCreatedWithRepeatedSKU(t *testing.T) {
	cases := []struct {
		name  string
		items []events.Item
	}{
		{"fits twice", []events.Item{item("A", 2), item("A", 2)}},
		{"each fits, the sum does not", []events.Item{item("A", 3), item("A", 3)}},
		{"apart after sorting", []events.Item{item("A", 1), item("B", 1), item("A", 1)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.stock(t, "A", 5)
			e.stock(t, "B", 5)
			id := newOrderID()
			err := e.svc.Apply(context.Background(), created(t, id, c.items...))
			if !errors.Is(err, events.ErrMalformed) {
				t.Errorf("Apply(created %v): got %v, want ErrMalformed", c.items, err)
			}
			e.wantLevel(t, "A", 5, 0)
			e.wantLevel(t, "B", 5, 0)
			wantOutbox(t, e.db)
			if n := count(t, e.db, "inbox"); n != 0 {
				t.Errorf("inbox rows: got %d, want 0", n)
			}
			e.apply(t, cancelled(t, id))
			e.wantLevel(t, "A", 5, 0)
		})
	}
}

func TestApplyBatch(t *testing.T) {
	e := newEnv(t)
	e.stock(t, "A", 3)
	o1, o2, o3, o4 := newOrderID(), newOrderID(), newOrderID(), newOrderID()
	c1 := created(t, o1, item("A", 2))
	batch := []events.Envelope{
		c1,
		created(t, o2, item("A", 2)), // 1 left after o1: rejected
		created(t, o3),               // no items: malformed, fails alone
		c1,                           // repeat inside the batch
		cancelled(t, o1),             // releases o1's 2 units
		created(t, o4, item("A", 3)), // fits once o1 is released
	}
	errs := e.svc.ApplyBatch(context.Background(), batch)
	if len(errs) != len(batch) {
		t.Fatalf("ApplyBatch: got %d errors, want %d", len(errs), len(batch))
	}
	for i, err := range errs {
		if i == 2 {
			if !errors.Is(err, events.ErrMalformed) {
				t.Errorf("errs[2]: got %v, want ErrMalformed", err)
			}
		} else if err != nil {
			t.Errorf("errs[%d] (%s): got %v, want nil", i, batch[i].Type, err)
		}
	}
	e.wantLevel(t, "A", 3, 3)
	// In batch order, as if applied one by one.
	wantOutbox(t, e.db, row(events.StockReserved, o1), row(events.StockRejected, o2), row(events.StockReleased, o1), row(events.StockReserved, o4))
	if n := count(t, e.db, "inbox"); n != 4 {
		t.Errorf("inbox rows: got %d, want 4", n)
	}
	if n := e.notified.Load(); n != 1 {
		t.Errorf("relay notified %d times, want once per batch", n)
	}

	// Redelivering the batch changes nothing.
	errs = e.svc.ApplyBatch(context.Background(), slices.Delete(slices.Clone(batch), 2, 3))
	for i, err := range errs {
		if err != nil {
			t.Errorf("redelivery errs[%d]: %v", i, err)
		}
	}
	e.wantLevel(t, "A", 3, 3)
	if n := len(outbox(t, e.db)); n != 4 {
		t.Errorf("outbox rows after redelivery: got %d, want 4", n)
	}
	if errs := e.svc.ApplyBatch(context.Background(), nil); len(errs) != 0 {
		t.Errorf("ApplyBatch(nil): got %v", errs)
	}
}

// forgetfulStore is the real SQL store with a Reservation that reports what
// view makes of the stored row. It takes away the service's second line of
// defence, the reservation row, so that the inbox is the only thing left
// between a redelivered event and a second effect.
type forgetfulStore struct {
	*inventorysql.Store
	view func(inventory.Reservation, bool) (inventory.Reservation, bool)
}

func (s forgetfulStore) Update(ctx context.Context, fn func(inventory.Tx) error) error {
	return s.Store.Update(ctx, func(tx inventory.Tx) error { return fn(forgetfulTx{tx, s.view}) })
}

type forgetfulTx struct {
	inventory.Tx
	view func(inventory.Reservation, bool) (inventory.Reservation, bool)
}

func (tx forgetfulTx) Reservation(ctx context.Context, orderID string) (inventory.Reservation, bool, error) {
	r, found, err := tx.Tx.Reservation(ctx, orderID)
	if err != nil {
		return r, found, err
	}
	r, found = tx.view(r, found)
	return r, found, nil
}

// The reservation row happens to make every repeat harmless, which would
// hide an inbox that lets repeats through. Here the service cannot rely on
// the row, so only the inbox stops a redelivered event acting twice.
func TestInboxAloneStopsRedelivery(t *testing.T) {
	cases := []struct {
		name string
		// view is what the service gets to see of a stored reservation.
		view func(inventory.Reservation, bool) (inventory.Reservation, bool)
		// run applies the events and redelivers one of them; it returns
		// what the outbox must hold.
		run func(t *testing.T, e *env, svc *inventory.Service) []string
	}{
		{
			name: "created redelivered, decisions forgotten",
			view: func(inventory.Reservation, bool) (inventory.Reservation, bool) { return inventory.Reservation{}, false },
			run: func(t *testing.T, e *env, svc *inventory.Service) []string {
				id := newOrderID()
				ev := created(t, id, item("A", 4))
				for range 2 {
					if err := svc.Apply(context.Background(), ev); err != nil {
						t.Fatalf("Apply(created %s): %v", ev.ID, err)
					}
				}
				// And once more, twice inside one batch.
				for i, err := range svc.ApplyBatch(context.Background(), []events.Envelope{ev, ev}) {
					if err != nil {
						t.Fatalf("ApplyBatch(created twice)[%d]: %v", i, err)
					}
				}
				e.wantLevel(t, "A", 10, 4)
				return []string{row(events.StockReserved, id)}
			},
		},
		{
			name: "cancelled redelivered, releases forgotten",
			view: func(r inventory.Reservation, found bool) (inventory.Reservation, bool) {
				if found && r.Status == inventory.Released {
					r.Status = inventory.Active
				}
				return r, found
			},
			run: func(t *testing.T, e *env, svc *inventory.Service) []string {
				id, other := newOrderID(), newOrderID()
				for _, ev := range []events.Envelope{created(t, other, item("A", 4)), created(t, id, item("A", 4))} {
					if err := svc.Apply(context.Background(), ev); err != nil {
						t.Fatalf("Apply(created %s): %v", ev.Subject, err)
					}
				}
				cancel := cancelled(t, id)
				for range 2 {
					if err := svc.Apply(context.Background(), cancel); err != nil {
						t.Fatalf("Apply(cancelled %s): %v", cancel.ID, err)
					}
				}
				// A second release would have taken the other order's units.
				e.wantLevel(t, "A", 10, 4)
				return []string{row(events.StockReserved, other), row(events.StockReserved, id), row(events.StockReleased, id)}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.stock(t, "A", 10)
			svc := inventory.NewService(forgetfulStore{e.st, c.view}, func() {}, slog.New(slog.DiscardHandler))
			want := c.run(t, e, svc)
			wantOutbox(t, e.db, want...)
		})
	}
}
