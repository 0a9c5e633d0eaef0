package order_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// Two instances of the service on one database: a cancel on one and the
// inventory reply on the other race for every order. Whatever the
// interleaving, a cancel is never overwritten by CONFIRMED, and each order
// emits one order.cancelled.
func TestInstancesCancelRacesReply(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		url := storetest.URL(t, engine, "orders")
		a, b := newEnvAt(t, url), newEnvAt(t, url)
		const n = 60
		orders := make([]order.Order, n)
		for i := range orders {
			orders[i] = a.place(t, "c-race")
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for _, o := range orders {
			ev := reserved(t, o.ID)
			wg.Go(func() {
				if _, _, err := a.svc.Cancel(context.Background(), o.ID, ""); err != nil {
					errs <- err
				}
			})
			wg.Go(func() {
				if err := b.svc.Apply(context.Background(), ev); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("racing cancel and reply: %v", err)
		}
		cancels := map[string]int{}
		for _, r := range outboxRows(t, a.db) {
			if r.EventType == "io.converge.order.cancelled" {
				cancels[r.Event.Subject]++
			}
		}
		for _, o := range orders {
			if st, _ := a.status(t, o.ID); st != order.Cancelled {
				t.Errorf("order %s is %s after a successful cancel, want CANCELLED", o.ID, st)
			}
			if cancels[o.ID] != 1 {
				t.Errorf("order %s has %d order.cancelled events, want 1", o.ID, cancels[o.ID])
			}
		}
	})
}

// The status guard is in SQL: a transition from a status the order no
// longer has changes nothing and says so.
func TestSetStatusIsGuarded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		e := newEnvAt(t, storetest.URL(t, engine, "orders"))
		o := e.place(t, "c-guard")
		e.apply(t, reserved(t, o.ID)) // PENDING -> CONFIRMED
		err := e.store.Update(context.Background(), func(tx order.Tx) error {
			return tx.SetStatus(context.Background(), o.ID, order.Pending, order.Rejected, "stale", o.CreatedAt)
		})
		if !errors.Is(err, order.ErrConflict) {
			t.Fatalf("SetStatus from PENDING on a CONFIRMED order: error %v, want ErrConflict", err)
		}
		if st, reason := e.status(t, o.ID); st != order.Confirmed || reason != "" {
			t.Fatalf("order is (%s, %q) after a refused transition, want (CONFIRMED, \"\")", st, reason)
		}
	})
}

// One idempotency key, requests racing on two instances: one order.
func TestInstancesShareIdempotencyKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		url := storetest.URL(t, engine, "orders")
		envs := []*env{newEnvAt(t, url), newEnvAt(t, url)}
		in := order.PlaceInput{CustomerID: "c-key", Items: []order.Item{{SKU: "A", Quantity: 1}}}
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			ids     = map[string]int{}
			created int
		)
		for i := range 20 {
			wg.Go(func() {
				o, c, err := envs[i%2].svc.Place(context.Background(), in, "k-shared", "")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("Place: %v", err)
					return
				}
				ids[o.ID]++
				if c {
					created++
				}
			})
		}
		wg.Wait()
		if len(ids) != 1 || created != 1 {
			t.Fatalf("20 racing requests with one key: orders %v, %d created; want one order, created once", ids, created)
		}
		if n := count(t, envs[0].db, "orders"); n != 1 {
			t.Fatalf("orders table has %d rows, want 1", n)
		}
	})
}

// A GET ?wait= held on one instance wakes when another instance changes
// the order: the changer tells the others (OnChange -> Wake; the role
// carries it over plain NATS), so the wait need not poll.
func TestWaitWakesAcrossInstances(t *testing.T) {
	url := storetest.URL(t, store.SQLite, "orders")
	a, b := newEnvAt(t, url), newEnvAt(t, url)
	a.svc.OnChange(func(ids []string) { b.svc.Wake(ids...) })
	o := a.place(t, "c-wake")
	done := make(chan order.Order, 1)
	go func() {
		got, _ := b.svc.Wait(context.Background(), o.ID, 5*time.Second)
		done <- got
	}()
	time.Sleep(300 * time.Millisecond) // past b's first read, between its polls
	moved := time.Now()
	a.apply(t, reserved(t, o.ID))
	select {
	case got := <-done:
		lag := time.Since(moved)
		if got.Status != order.Confirmed {
			t.Errorf("Wait on the other instance: got %s, want CONFIRMED", got.Status)
		}
		if lag > 120*time.Millisecond {
			t.Errorf("Wait on the other instance returned %s after the change, want well under its ~200ms to the next poll", lag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait on the other instance did not return")
	}
}

// Idempotency keys are forgotten after their retention: the key then
// places a new order.
func TestPruneIdempotencyKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		ctx := context.Background()
		e := newEnvAt(t, storetest.URL(t, engine, "orders"))
		in := order.PlaceInput{CustomerID: "c-prune", Items: []order.Item{{SKU: "A", Quantity: 1}}}
		first, _, err := e.svc.Place(ctx, in, "k-old", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ExecContext(ctx, `UPDATE idempotency_keys SET created_at = $1`, time.Now().Add(-48*time.Hour).UnixMicro()); err != nil {
			t.Fatal(err)
		}
		n, err := e.store.PruneIdempotencyKeys(ctx, time.Now().Add(-ordersql.IdempotencyRetention))
		if err != nil || n != 1 {
			t.Fatalf("PruneIdempotencyKeys: %d, %v; want 1 key pruned", n, err)
		}
		again, created, err := e.svc.Place(ctx, in, "k-old", "")
		if err != nil || !created || again.ID == first.ID {
			t.Fatalf("the pruned key placed (%s, created %v, %v); want a new order", again.ID, created, err)
		}
	})
}
