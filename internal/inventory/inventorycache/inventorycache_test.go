package inventorycache_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorycache"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

type env struct {
	db  *store.DB
	sql *inventorysql.Store
	st  *inventorycache.Store
}

func newEnv(t testing.TB, ttl time.Duration) *env {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, "inventory")
	sq, err := inventorysql.Open(ctx, db)
	if err != nil {
		t.Fatalf("inventorysql.Open: %v", err)
	}
	return &env{db: db, sql: sq, st: inventorycache.New(sq, cache.NewMemory(100), ttl, slog.New(slog.DiscardHandler))}
}

func (e *env) update(t testing.TB, fn func(ctx context.Context, tx inventory.Tx) error) error {
	t.Helper()
	ctx := context.Background()
	return e.st.Update(ctx, func(tx inventory.Tx) error { return fn(ctx, tx) })
}

func (e *env) set(t testing.TB, sku string, onHand int64) {
	t.Helper()
	err := e.update(t, func(ctx context.Context, tx inventory.Tx) error {
		_, err := tx.SetOnHand(ctx, sku, onHand, time.Now())
		return err
	})
	if err != nil {
		t.Fatalf("SetOnHand(%s, %d): %v", sku, onHand, err)
	}
}

// sneak changes on_hand behind the cache's back.
func (e *env) sneak(t testing.TB, sku string, onHand int64) {
	t.Helper()
	res, err := e.db.ExecContext(context.Background(), `UPDATE stock SET on_hand = $1 WHERE sku = $2`, onHand, sku)
	if err != nil {
		t.Fatalf("direct UPDATE: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("direct UPDATE touched %d rows, want 1", n)
	}
}

func (e *env) want(t testing.TB, what, sku string, onHand, reserved int64) {
	t.Helper()
	it, err := e.st.Get(context.Background(), sku)
	if err != nil {
		t.Fatalf("%s: Get(%s): %v", what, sku, err)
	}
	if it.OnHand != onHand || it.Reserved != reserved || it.Available != onHand-reserved {
		t.Errorf("%s: Get(%s) = on_hand %d reserved %d available %d, want %d, %d, %d",
			what, sku, it.OnHand, it.Reserved, it.Available, onHand, reserved, onHand-reserved)
	}
}

func TestGetIsCachedUntilUpdateInvalidates(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.set(t, "A", 10)
	e.want(t, "first read", "A", 10, 0)
	e.sneak(t, "A", 7)
	e.want(t, "cached read", "A", 10, 0)
	if it, err := e.sql.Get(context.Background(), "A"); err != nil || it.OnHand != 7 {
		t.Fatalf("uncached Get: got (%+v, %v), want on_hand 7", it, err)
	}
	e.set(t, "A", 12)
	e.want(t, "after SetOnHand", "A", 12, 0)
}

func TestEveryWriteInvalidatesItsSKUs(t *testing.T) {
	cases := []struct {
		name     string
		fn       func(ctx context.Context, tx inventory.Tx) error
		onHand   int64 // of A after the sneak (7) and fn
		reserved int64
	}{
		{"Reserve", func(ctx context.Context, tx inventory.Tx) error { return tx.Reserve(ctx, "A", 2, time.Now()) }, 7, 3},
		{"Release", func(ctx context.Context, tx inventory.Tx) error { return tx.Release(ctx, "A", 1, time.Now()) }, 7, 0},
		{"SetOnHand", func(ctx context.Context, tx inventory.Tx) error {
			_, err := tx.SetOnHand(ctx, "A", 9, time.Now())
			return err
		}, 9, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, time.Minute)
			e.set(t, "A", 10)
			e.set(t, "B", 5)
			if err := e.update(t, func(ctx context.Context, tx inventory.Tx) error { return tx.Reserve(ctx, "A", 1, time.Now()) }); err != nil {
				t.Fatal(err)
			}
			e.want(t, "A cached", "A", 10, 1)
			e.want(t, "B cached", "B", 5, 0)
			e.sneak(t, "A", 7)
			e.sneak(t, "B", 4)
			if err := e.update(t, c.fn); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			e.want(t, "touched", "A", c.onHand, c.reserved)
			e.want(t, "untouched", "B", 5, 0)
		})
	}
}

func TestInvalidationHappensAfterCommit(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.set(t, "A", 10)
	e.want(t, "cache it", "A", 10, 0)
	e.sneak(t, "A", 8)
	var during inventory.Item
	err := e.update(t, func(ctx context.Context, tx inventory.Tx) error {
		if err := tx.Reserve(ctx, "A", 3, time.Now()); err != nil {
			return err
		}
		var err error
		during, err = e.st.Get(ctx, "A")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if during.OnHand != 10 || during.Reserved != 0 {
		t.Errorf("Get inside the tx: got on_hand %d reserved %d, want the cached 10, 0", during.OnHand, during.Reserved)
	}
	e.want(t, "after commit", "A", 8, 3)
}

func TestFailedUpdateLeavesCache(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.set(t, "A", 10)
	e.want(t, "cache it", "A", 10, 0)
	e.sneak(t, "A", 6)
	boom := errors.New("boom")
	err := e.update(t, func(ctx context.Context, tx inventory.Tx) error {
		if err := tx.Reserve(ctx, "A", 2, time.Now()); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: got %v, want %v", err, boom)
	}
	e.want(t, "after a rolled-back Reserve", "A", 10, 0)

	// A write that itself fails (a conflict) leaves the cache alone too.
	err = e.update(t, func(ctx context.Context, tx inventory.Tx) error { return tx.Reserve(ctx, "A", 100, time.Now()) })
	if !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("Reserve(100 of 6): got %v, want ErrConflict", err)
	}
	e.want(t, "after a failed Reserve", "A", 10, 0)
	err = e.update(t, func(ctx context.Context, tx inventory.Tx) error { return tx.Release(ctx, "A", 1, time.Now()) })
	if !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("Release(1 of 0 reserved): got %v, want ErrConflict", err)
	}
	e.want(t, "after a failed Release", "A", 10, 0)
	err = e.update(t, func(ctx context.Context, tx inventory.Tx) error { return tx.Reserve(ctx, "nope", 1, time.Now()) })
	if !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("Reserve(unknown sku): got %v, want ErrConflict", err)
	}
	if it, _ := e.sql.Get(context.Background(), "A"); it.Reserved != 0 || it.OnHand != 6 {
		t.Errorf("database after the rollbacks: got %+v, want on_hand 6 reserved 0", it)
	}
}

func TestServiceApplyInvalidates(t *testing.T) {
	e := newEnv(t, time.Minute)
	svc := inventory.NewService(e.st, func() {}, slog.New(slog.DiscardHandler))
	if _, err := svc.SetStock(context.Background(), "A", 10); err != nil {
		t.Fatal(err)
	}
	e.want(t, "cache it", "A", 10, 0)
	ev, err := events.New("converge/order", events.OrderCreated, "o1",
		events.OrderCreatedData{OrderID: "o1", CustomerID: "c", Items: []events.Item{{SKU: "A", Quantity: 4}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Apply(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	e.want(t, "after the reservation", "A", 10, 4)
}

func TestTTL(t *testing.T) {
	const ttl = 50 * time.Millisecond
	e := newEnv(t, ttl)
	e.set(t, "A", 10)
	e.want(t, "cache it", "A", 10, 0)
	e.sneak(t, "A", 3)
	e.want(t, "within the ttl", "A", 10, 0)
	time.Sleep(ttl + 30*time.Millisecond)
	e.want(t, "after the ttl", "A", 3, 0)
}

func TestMissIsNotCached(t *testing.T) {
	e := newEnv(t, time.Minute)
	if _, err := e.st.Get(context.Background(), "A"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("Get(missing): got %v, want ErrNotFound", err)
	}
	if _, err := e.db.ExecContext(context.Background(), `INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES ('A', 2, 0, 1)`); err != nil {
		t.Fatal(err)
	}
	e.want(t, "after a direct insert", "A", 2, 0)
}
