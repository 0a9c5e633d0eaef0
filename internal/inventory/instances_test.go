package inventory_test

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// instance is one instance of the inventory service over the database at
// url; several may share one database.
func instance(t testing.TB, url string) *env {
	t.Helper()
	db := storetest.OpenURL(t, url)
	st, err := inventorysql.Open(context.Background(), db)
	if err != nil {
		t.Fatalf("inventorysql.Open: %v", err)
	}
	e := &env{db: db, st: st}
	e.svc = inventory.NewService(st, func() { e.notified.Add(1) }, slog.New(slog.DiscardHandler))
	return e
}

// Two instances on one database take 1,000 orders for a SKU with stock
// 100 while 300 of those orders are cancelled, in random order (a cancel
// may come before its creation) and random batches, each delivery retried
// until it applies, as the broker would. Nothing is oversold and nothing
// leaks: reserved is exactly what the surviving reservations hold.
func TestInstancesNeverOversellOrLeak(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		url := storetest.URL(t, engine, "inventory")
		insts := []*env{instance(t, url), instance(t, url)}
		insts[0].stock(t, "HOT", 100)

		const orders, cancels = 1000, 300
		var deliveries []events.Envelope
		ids := make([]string, orders)
		for i := range ids {
			ids[i] = newOrderID()
			deliveries = append(deliveries, created(t, ids[i], item("HOT", 1)))
			if i < cancels {
				deliveries = append(deliveries, cancelled(t, ids[i]))
			}
		}
		rand.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

		queue := make(chan events.Envelope, len(deliveries))
		for _, d := range deliveries {
			queue <- d
		}
		var (
			wg      sync.WaitGroup
			pending sync.WaitGroup // deliveries not yet applied
			retries int64
			mu      sync.Mutex
		)
		pending.Add(len(deliveries))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for w := range 8 {
			svc := insts[w%2].svc
			wg.Go(func() {
				for {
					var batch []events.Envelope
					select {
					case d := <-queue:
						batch = append(batch, d)
					case <-ctx.Done():
						return
					}
				fill:
					for len(batch) < 1+rand.IntN(16) {
						select {
						case d := <-queue:
							batch = append(batch, d)
						default:
							break fill
						}
					}
					for i, err := range svc.ApplyBatch(ctx, batch) {
						if err != nil { // redelivered later, as a nak would
							mu.Lock()
							retries++
							mu.Unlock()
							queue <- batch[i]
							continue
						}
						pending.Done()
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { pending.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("deliveries still failing after %s", time.Minute)
		}
		cancel()
		wg.Wait()
		t.Logf("%d deliveries, %d retried", len(deliveries), retries)

		e := insts[1]
		var active, heldByCancelled int64
		for i, id := range ids {
			r, found := e.reservation(t, id)
			if !found {
				t.Fatalf("order %s has no reservation after its creation was applied", id)
			}
			if r.Status == inventory.Active {
				active += int64(r.Items[0].Quantity)
				if i < cancels {
					heldByCancelled++
				}
			}
		}
		onHand, reserved := e.level(t, "HOT")
		if onHand != 100 || reserved != active || reserved > onHand {
			t.Errorf("HOT: on_hand %d reserved %d, active reservations hold %d; want on_hand 100 and reserved = held <= 100", onHand, reserved, active)
		}
		if heldByCancelled != 0 {
			t.Errorf("%d cancelled orders still hold stock, want 0", heldByCancelled)
		}
		// Whether the SKU sells out depends on the order of arrival: a
		// creation rejected while stock was held, before a cancel freed
		// it, stays rejected. So the test asks for no exact count.
		if active == 0 {
			t.Error("no reservation is active, want some of the 100 units held")
		}
	})
}

// The reservation guard is in SQL: reserving more than is available fails
// and changes nothing, whatever the caller checked before.
func TestReserveIsGuarded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		e := instance(t, storetest.URL(t, engine, "inventory"))
		e.stock(t, "G", 5)
		at := time.Now()
		reserve := func(qty int) error {
			return e.st.Update(context.Background(), func(tx inventory.Tx) error { return tx.Reserve(context.Background(), "G", qty, at) })
		}
		if err := reserve(3); err != nil {
			t.Fatalf("reserve 3 of 5: %v", err)
		}
		if err := reserve(3); !errors.Is(err, inventory.ErrConflict) {
			t.Fatalf("reserve 3 more with 2 available: error %v, want ErrConflict", err)
		}
		e.wantLevel(t, "G", 5, 3)
		release := func(qty int) error {
			return e.st.Update(context.Background(), func(tx inventory.Tx) error { return tx.Release(context.Background(), "G", qty, at) })
		}
		if err := release(4); !errors.Is(err, inventory.ErrConflict) {
			t.Fatalf("release 4 of 3 reserved: error %v, want ErrConflict", err)
		}
		e.wantLevel(t, "G", 5, 3)
	})
}

// One decision per order: a second reservation for it is refused by the
// database, and a status moves only from the status it has.
func TestReservationIsGuarded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		e := instance(t, storetest.URL(t, engine, "inventory"))
		e.stock(t, "G", 5)
		id := newOrderID()
		e.apply(t, created(t, id, item("G", 1)))
		at := time.Now()
		err := e.st.Update(context.Background(), func(tx inventory.Tx) error {
			return tx.AddReservation(context.Background(), inventory.Reservation{OrderID: id, Status: inventory.Refused, Reason: "again"}, at)
		})
		if !errors.Is(err, inventory.ErrConflict) {
			t.Fatalf("second reservation for one order: error %v, want ErrConflict", err)
		}
		err = e.st.Update(context.Background(), func(tx inventory.Tx) error {
			return tx.SetReservationStatus(context.Background(), id, inventory.Released, inventory.Active, at)
		})
		if !errors.Is(err, inventory.ErrConflict) {
			t.Fatalf("move a reservation from a status it does not have: error %v, want ErrConflict", err)
		}
		if r, _ := e.reservation(t, id); r.Status != inventory.Active {
			t.Fatalf("reservation is %s after refused changes, want active", r.Status)
		}
	})
}
