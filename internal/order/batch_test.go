package order_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
)

// faultyStore wraps the real SQL store: Create fails for one customer, and
// the first transaction can be held open so that concurrent Place calls
// queue up behind it and share the next one.
type faultyStore struct {
	order.Store
	poison   string
	holdOnce time.Duration

	mu      sync.Mutex
	updates int
	creates []int // Create calls per transaction
}

var errPoison = errors.New("poisoned create")

func (s *faultyStore) Update(ctx context.Context, fn func(order.Tx) error) error {
	s.mu.Lock()
	s.updates++
	hold := s.holdOnce
	s.holdOnce = 0
	s.mu.Unlock()
	return s.Store.Update(ctx, func(tx order.Tx) error {
		ft := &faultyTx{Tx: tx, s: s}
		err := fn(ft)
		s.mu.Lock()
		s.creates = append(s.creates, ft.creates)
		s.mu.Unlock()
		time.Sleep(hold)
		return err
	})
}

type faultyTx struct {
	order.Tx
	s       *faultyStore
	creates int
}

func (t *faultyTx) Create(ctx context.Context, o order.Order, accepted time.Time, key, hash string) error {
	t.creates++
	if o.CustomerID == t.s.poison {
		return errPoison
	}
	return t.Tx.Create(ctx, o, accepted, key, hash)
}

type placeResult struct {
	in      order.PlaceInput
	key     string
	o       order.Order
	created bool
	err     error
}

// placeAll runs every request concurrently and returns the results in order.
func placeAll(svc *order.Service, ins []order.PlaceInput, keys []string) []placeResult {
	out := make([]placeResult, len(ins))
	var wg sync.WaitGroup
	for i := range ins {
		wg.Go(func() {
			o, created, err := svc.Place(context.Background(), ins[i], keys[i], "")
			out[i] = placeResult{ins[i], keys[i], o, created, err}
		})
	}
	wg.Wait()
	return out
}

func TestPlaceGroupCommitIsolatesAFailure(t *testing.T) {
	e := newEnv(t)
	fs := &faultyStore{Store: e.store, poison: "poison", holdOnce: 200 * time.Millisecond}
	svc := order.NewService(fs, func() {}, slog.New(slog.DiscardHandler))

	// The first order holds its transaction; the rest queue behind it.
	first := make(chan placeResult, 1)
	go func() {
		o, created, err := svc.Place(context.Background(), order.PlaceInput{CustomerID: "first", Items: one("A", 1)}, "", "")
		first <- placeResult{o: o, created: created, err: err}
	}()
	time.Sleep(50 * time.Millisecond)
	var ins []order.PlaceInput
	for i := range 20 {
		customer := fmt.Sprintf("good-%02d", i)
		if i%7 == 3 {
			customer = "poison"
		}
		ins = append(ins, order.PlaceInput{CustomerID: customer, Items: one("A", i+1)})
	}
	results := placeAll(svc, ins, make([]string, len(ins)))
	if r := <-first; r.err != nil || !r.created {
		t.Errorf("first Place: got (%v, %v), want created", r.created, r.err)
	}

	created := map[string]bool{}
	for _, r := range results {
		if r.in.CustomerID == "poison" {
			if !errors.Is(r.err, errPoison) || r.created || r.o.ID != "" {
				t.Errorf("Place(poison): got (%+v, %v, %v), want errPoison", r.o, r.created, r.err)
			}
			continue
		}
		if r.err != nil || !r.created || r.o.CustomerID != r.in.CustomerID || r.o.Items[0] != r.in.Items[0] {
			t.Errorf("Place(%s): got (%+v, %v, %v), want its own created order", r.in.CustomerID, r.o, r.created, r.err)
			continue
		}
		if created[r.o.ID] {
			t.Errorf("order id %s returned twice", r.o.ID)
		}
		created[r.o.ID] = true
		if got := e.get(t, r.o.ID); got.CustomerID != r.in.CustomerID {
			t.Errorf("stored order %s: customer %s, want %s", r.o.ID, got.CustomerID, r.in.CustomerID)
		}
	}
	wantOrders := 1 + len(created)
	if len(created) != 17 {
		t.Errorf("created orders: got %d, want 17", len(created))
	}
	if n := count(t, e.db, "orders"); n != wantOrders {
		t.Errorf("orders rows: got %d, want %d", n, wantOrders)
	}
	rows := outboxRows(t, e.db)
	if len(rows) != wantOrders {
		t.Errorf("outbox rows: got %d, want %d (one per committed order)", len(rows), wantOrders)
	}
	for _, r := range rows {
		if r.EventType != string(events.OrderCreated) {
			t.Errorf("outbox row %s: type %s, want order.created", r.Event.ID, r.EventType)
		}
	}

	fs.mu.Lock()
	defer fs.mu.Unlock()
	t.Logf("%d transactions, creates per transaction %v", fs.updates, fs.creates)
	// Alone, 21 orders take 21 transactions. More means a shared
	// transaction failed (a poisoned order in it) and its orders were then
	// placed one by one.
	if fs.updates <= 1+len(ins) {
		t.Errorf("transactions: got %d, want more than %d (a failed shared transaction, then one per order)", fs.updates, 1+len(ins))
	}
}

func TestPlaceConcurrentMixed(t *testing.T) {
	e := newEnv(t)
	var (
		ins  []order.PlaceInput
		keys []string
	)
	a := order.PlaceInput{CustomerID: "a", Items: one("A", 1)}
	b := order.PlaceInput{CustomerID: "a", Items: one("A", 2)}
	for i := range 60 { // 30 without key, 10 under "same", 10+10 under "contested"
		switch {
		case i%6 == 1:
			ins, keys = append(ins, a), append(keys, "same")
		case i%6 == 3:
			ins, keys = append(ins, a), append(keys, "contested")
		case i%6 == 5:
			ins, keys = append(ins, b), append(keys, "contested")
		default:
			ins, keys = append(ins, order.PlaceInput{CustomerID: fmt.Sprintf("c%02d", i), Items: one("A", 1)}), append(keys, "")
		}
	}
	results := placeAll(e.svc, ins, keys)

	byKey := map[string][]placeResult{}
	seen := map[string]bool{}
	for _, r := range results {
		if r.key != "" {
			byKey[r.key] = append(byKey[r.key], r)
			continue
		}
		if r.err != nil || !r.created || seen[r.o.ID] || r.o.CustomerID != r.in.CustomerID {
			t.Errorf("Place(%s) without key: got (%+v, %v, %v), want a new order of its own", r.in.CustomerID, r.o, r.created, r.err)
		}
		seen[r.o.ID] = true
	}
	if len(seen) != 30 {
		t.Errorf("orders without key: got %d, want 30", len(seen))
	}

	// "same": one order, created once, returned to all ten.
	ids, createdN := map[string]bool{}, 0
	for _, r := range byKey["same"] {
		if r.err != nil {
			t.Errorf("Place under key same: %v", r.err)
			continue
		}
		ids[r.o.ID] = true
		if r.created {
			createdN++
		}
	}
	if len(ids) != 1 || createdN != 1 {
		t.Errorf("key same: got %d ids created %d times, want 1 id created once", len(ids), createdN)
	}

	// "contested": the first request to commit wins; the other input fails.
	var winners, losers []placeResult
	for _, r := range byKey["contested"] {
		if r.err == nil {
			winners = append(winners, r)
		} else if errors.Is(r.err, order.ErrIdempotencyMismatch) {
			losers = append(losers, r)
		} else {
			t.Errorf("Place under key contested: unexpected error %v", r.err)
		}
	}
	ids, createdN = map[string]bool{}, 0
	for _, w := range winners {
		ids[w.o.ID] = true
		if w.created {
			createdN++
		}
		if w.in.Items[0] != winners[0].in.Items[0] {
			t.Errorf("key contested: both inputs succeeded (%v and %v)", w.in.Items, winners[0].in.Items)
		}
	}
	if len(ids) != 1 || createdN != 1 || len(winners) != 10 || len(losers) != 10 {
		t.Errorf("key contested: got %d winners (%d ids, created %d times) and %d mismatches, want 10 winners sharing 1 id created once and 10 mismatches",
			len(winners), len(ids), createdN, len(losers))
	}

	if n := count(t, e.db, "orders"); n != 32 {
		t.Errorf("orders rows: got %d, want 32", n)
	}
	if n := len(outboxRows(t, e.db)); n != 32 {
		t.Errorf("outbox rows: got %d, want 32", n)
	}
}

func TestApplyBatch(t *testing.T) {
	e := newEnv(t)
	a, b, c, d := e.place(t, "a"), e.place(t, "b"), e.place(t, "c"), e.place(t, "d")
	e.cancel(t, d.ID)

	waited := make(chan order.Order, 1)
	go func() {
		o, _ := e.svc.Wait(context.Background(), a.ID, 5*time.Second)
		waited <- o
	}()
	time.Sleep(50 * time.Millisecond)

	rA := reserved(t, a.ID)
	batch := []events.Envelope{
		rA,
		rejected(t, b.ID, events.ReasonInsufficientStock),
		reserved(t, uuid.Must(uuid.NewV7()).String()), // unknown order
		rA, // repeat inside the batch
		reserved(t, d.ID),
		reply(t, events.StockReleased, events.StockReleasedData{OrderID: c.ID}),
		reply(t, events.OrderCreated, events.OrderCreatedData{OrderID: c.ID}), // not for us
	}
	start := time.Now()
	errs := e.svc.ApplyBatch(context.Background(), batch)
	if len(errs) != len(batch) {
		t.Fatalf("ApplyBatch: got %d errors, want %d", len(errs), len(batch))
	}
	for i, err := range errs {
		switch i {
		case 2, 6:
			if !errors.Is(err, events.ErrUnknown) {
				t.Errorf("errs[%d]: got %v, want ErrUnknown", i, err)
			}
		default:
			if err != nil {
				t.Errorf("errs[%d] (%s): got %v, want nil", i, batch[i].Type, err)
			}
		}
	}
	for _, w := range []struct {
		id     string
		status order.Status
		reason string
	}{
		{a.ID, order.Confirmed, ""},
		{b.ID, order.Rejected, events.ReasonInsufficientStock},
		{c.ID, order.Pending, ""},
		{d.ID, order.Cancelled, ""},
	} {
		if st, reason := e.status(t, w.id); st != w.status || reason != w.reason {
			t.Errorf("order %s: got (%s, %q), want (%s, %q)", w.id, st, reason, w.status, w.reason)
		}
	}
	if n := count(t, e.db, "inbox"); n != 4 {
		t.Errorf("inbox rows: got %d, want 4 (reserved a, rejected b, reserved d, released c)", n)
	}
	select {
	case o := <-waited:
		if o.Status != order.Confirmed {
			t.Errorf("Wait on a: got %s, want CONFIRMED", o.Status)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Wait returned %s after ApplyBatch, want promptly", took)
		}
	case <-time.After(5 * time.Second):
		t.Error("Wait on a did not return after ApplyBatch")
	}

	// The same batch again changes nothing.
	errs = e.svc.ApplyBatch(context.Background(), batch[:2])
	if errs[0] != nil || errs[1] != nil {
		t.Errorf("redelivered batch: got %v, want no errors", errs)
	}
	if n := count(t, e.db, "inbox"); n != 4 {
		t.Errorf("inbox rows after redelivery: got %d, want 4", n)
	}
	if errs := e.svc.ApplyBatch(context.Background(), nil); len(errs) != 0 {
		t.Errorf("ApplyBatch(nil): got %v, want no errors", errs)
	}
}

// OnFinal hears of each order once, when the move out of PENDING commits:
// not for the batch transaction that a bad event rolled back, not for a
// repeat, not for a confirmed order cancelled later.
func TestOnFinalReportsEachOrderOnce(t *testing.T) {
	e := newEnv(t)
	type final struct {
		to        order.Status
		createdAt time.Time
	}
	var got []final
	e.svc.OnFinal(func(to order.Status, createdAt time.Time) { got = append(got, final{to, createdAt}) })

	a, b, c, d := e.place(t, "a"), e.place(t, "b"), e.place(t, "c"), e.place(t, "d")
	e.cancel(t, d.ID) // PENDING -> CANCELLED
	batch := []events.Envelope{
		reserved(t, a.ID),
		rejected(t, b.ID, events.ReasonInsufficientStock),
		reserved(t, uuid.Must(uuid.NewV7()).String()), // unknown: the batch falls back to one transaction each
		reserved(t, d.ID), // cancelled already
	}
	e.svc.ApplyBatch(context.Background(), batch)
	e.svc.ApplyBatch(context.Background(), batch[:2]) // redelivered
	e.apply(t, reserved(t, c.ID))
	e.cancel(t, c.ID) // CONFIRMED -> CANCELLED: c was final already

	want := []final{{order.Cancelled, d.CreatedAt}, {order.Confirmed, a.CreatedAt}, {order.Rejected, b.CreatedAt}, {order.Confirmed, c.CreatedAt}}
	if len(got) != len(want) {
		t.Fatalf("OnFinal heard %v, want %v", got, want)
	}
	for i := range want {
		if got[i].to != want[i].to || !got[i].createdAt.Equal(want[i].createdAt.Truncate(time.Microsecond)) {
			t.Errorf("OnFinal %d: got %v, want %v", i, got[i], want[i])
		}
	}
}
