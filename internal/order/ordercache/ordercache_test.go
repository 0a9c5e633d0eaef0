package ordercache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordercache"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

type env struct {
	db  *store.DB
	sql *ordersql.Store
	mem *cache.Memory
	st  *ordercache.Store
}

func newEnv(t testing.TB, ttl time.Duration) *env {
	t.Helper()
	return newEnvOn(t, store.SQLite, ttl)
}

func newEnvOn(t testing.TB, engine store.Engine, ttl time.Duration) *env {
	t.Helper()
	ctx := context.Background()
	db := storetest.OpenURL(t, storetest.URL(t, engine, "orders"))
	sq, err := ordersql.Open(ctx, db)
	if err != nil {
		t.Fatalf("ordersql.Open: %v", err)
	}
	mem := cache.NewMemory(100)
	return &env{db: db, sql: sq, mem: mem, st: ordercache.New(sq, mem, ttl, slog.New(slog.DiscardHandler))}
}

// create stores a PENDING order through the decorator.
func (e *env) create(t testing.TB) order.Order {
	t.Helper()
	return e.createID(t, uuid.Must(uuid.NewV7()).String())
}

func (e *env) createID(t testing.TB, id string) order.Order {
	t.Helper()
	o := newOrder()
	o.ID = id
	if err := e.st.Update(context.Background(), createTx(o)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return o
}

// sneak changes the row behind the cache's back.
func (e *env) sneak(t testing.TB, id, reason string) {
	t.Helper()
	res, err := e.db.ExecContext(context.Background(), `UPDATE orders SET reason = $1 WHERE id = $2`, reason, id)
	if err != nil {
		t.Fatalf("direct UPDATE: %v", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("direct UPDATE touched %d rows, want 1", n)
	}
}

func (e *env) get(t testing.TB, id string) order.Order {
	t.Helper()
	o, err := e.st.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return o
}

func (e *env) wantGet(t testing.TB, what, id string, status order.Status, reason string) {
	t.Helper()
	o := e.get(t, id)
	if o.Status != status || o.Reason != reason {
		t.Errorf("%s: Get(%s) = (%s, %q), want (%s, %q)", what, id, o.Status, o.Reason, status, reason)
	}
}

// createTx creates o, received when it was created.
func createTx(o order.Order) func(order.Tx) error {
	return func(tx order.Tx) error { return tx.Create(context.Background(), o, o.CreatedAt, "", "") }
}

func setStatus(id string, st order.Status, reason string) func(order.Tx) error {
	return func(tx order.Tx) error {
		return tx.SetStatus(context.Background(), id, order.Pending, st, reason, time.Now())
	}
}

func TestGetIsCachedUntilUpdateInvalidates(t *testing.T) {
	e := newEnv(t, time.Minute)
	o := e.create(t)
	e.wantGet(t, "first read", o.ID, order.Pending, "")
	e.sneak(t, o.ID, "behind-the-cache")
	e.wantGet(t, "cached read", o.ID, order.Pending, "")
	e.wantGet(t, "cached read again", o.ID, order.Pending, "")

	// The database really has the new value.
	if got, err := e.sql.Get(context.Background(), o.ID); err != nil || got.Reason != "behind-the-cache" {
		t.Fatalf("uncached Get: got (%q, %v), want reason behind-the-cache", got.Reason, err)
	}

	if err := e.st.Update(context.Background(), setStatus(o.ID, order.Confirmed, "via-decorator")); err != nil {
		t.Fatal(err)
	}
	e.wantGet(t, "after Update", o.ID, order.Confirmed, "via-decorator")
}

// A created order is cached by its commit, as the database holds it: the
// first read (a client asking for its outcome right after the 202) is a
// hit.
func TestCreateFillsTheCache(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		e := newEnvOn(t, engine, time.Minute)
		ctx := context.Background()
		// Times finer than the store keeps, in another zone: the cache
		// must hold what a read of the store returns.
		o := newOrder()
		o.CreatedAt = time.Now().In(time.FixedZone("X", 3600))
		o.UpdatedAt = o.CreatedAt.Add(1500 * time.Nanosecond)
		if err := e.st.Update(ctx, createTx(o)); err != nil {
			t.Fatalf("Create: %v", err)
		}
		stored, err := e.sql.Get(ctx, o.ID)
		if err != nil {
			t.Fatalf("uncached Get: %v", err)
		}
		e.sneak(t, o.ID, "behind-the-cache")
		if got := e.get(t, o.ID); !reflect.DeepEqual(got, stored) {
			t.Errorf("first read after the create:\n got %+v\nwant %+v (as stored, from the cache)", got, stored)
		}
	})
}

func TestMissIsNotCached(t *testing.T) {
	e := newEnv(t, time.Minute)
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := e.st.Get(context.Background(), id); !errors.Is(err, order.ErrNotFound) {
		t.Fatalf("Get(missing): got %v, want ErrNotFound", err)
	}
	e.createID(t, id)
	e.wantGet(t, "after create", id, order.Pending, "")
}

func TestUpdateInvalidatesOnlyTouchedAfterCommit(t *testing.T) {
	e := newEnv(t, time.Minute)
	a, b := e.create(t), e.create(t)
	e.get(t, a.ID)
	e.get(t, b.ID)
	e.sneak(t, a.ID, "sneaky-a")
	e.sneak(t, b.ID, "sneaky-b")

	var during order.Order
	err := e.st.Update(context.Background(), func(tx order.Tx) error {
		if err := tx.SetStatus(context.Background(), a.ID, order.Pending, order.Rejected, "x", time.Now()); err != nil {
			return err
		}
		// Not yet committed: the entry must still be there. A reader
		// that missed now would load the old committed row into the cache.
		var err error
		during, err = e.st.Get(context.Background(), a.ID)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if during.Status != order.Pending || during.Reason != "" {
		t.Errorf("Get during the tx: got (%s, %q), want the cached (PENDING, \"\")", during.Status, during.Reason)
	}
	e.wantGet(t, "touched", a.ID, order.Rejected, "x")
	e.wantGet(t, "untouched", b.ID, order.Pending, "")
}

func TestFailedUpdateLeavesCache(t *testing.T) {
	e := newEnv(t, time.Minute)
	o := e.create(t)
	e.get(t, o.ID)
	e.sneak(t, o.ID, "sneaky")
	boom := errors.New("boom")
	err := e.st.Update(context.Background(), func(tx order.Tx) error {
		if err := tx.SetStatus(context.Background(), o.ID, order.Pending, order.Confirmed, "", time.Now()); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: got %v, want %v", err, boom)
	}
	// Had the failed Update dropped the entry, Get would read "sneaky".
	e.wantGet(t, "after a rolled-back Update", o.ID, order.Pending, "")
	if got, _ := e.sql.Get(context.Background(), o.ID); got.Status != order.Pending {
		t.Errorf("database after rollback: got %s, want PENDING", got.Status)
	}
}

func TestFailedCreateDoesNotCache(t *testing.T) {
	e := newEnv(t, time.Minute)
	o := e.create(t)
	// A second Create of the same id fails; nothing changes in the cache.
	e.get(t, o.ID)
	e.sneak(t, o.ID, "sneaky")
	err := e.st.Update(context.Background(), createTx(o))
	if err == nil {
		t.Fatal("Create of an existing id: got nil, want an error")
	}
	e.wantGet(t, "after a failed Create", o.ID, order.Pending, "")
}

func TestTTL(t *testing.T) {
	const ttl = 50 * time.Millisecond
	e := newEnv(t, ttl)
	o := e.create(t)
	e.get(t, o.ID)
	e.sneak(t, o.ID, "sneaky")
	e.wantGet(t, "within the ttl", o.ID, order.Pending, "")
	time.Sleep(ttl + 30*time.Millisecond)
	e.wantGet(t, "after the ttl", o.ID, order.Pending, "sneaky")
}

func TestListIsNotCached(t *testing.T) {
	e := newEnv(t, time.Minute)
	o := e.create(t)
	e.get(t, o.ID)
	e.sneak(t, o.ID, "sneaky")
	got, err := e.st.List(context.Background(), order.Filter{Limit: 10})
	if err != nil || len(got) != 1 || got[0].Reason != "sneaky" {
		t.Errorf("List: got (%+v, %v), want the one order with reason sneaky", got, err)
	}
}

// newOrder is a PENDING order with a fresh id, not stored.
func newOrder() order.Order {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return order.Order{ID: uuid.Must(uuid.NewV7()).String(), CustomerID: "c", Status: order.Pending,
		Items: []order.Item{{SKU: "A", Quantity: 1}}, CreatedAt: now, UpdatedAt: now}
}

// wantUncached checks that a read of id goes to the database: the row is
// changed behind the cache's back, and the read must see the change.
func (e *env) wantUncached(t testing.TB, what, id string) {
	t.Helper()
	e.sneak(t, id, "behind-the-cache")
	if got := e.get(t, id); got.Reason != "behind-the-cache" {
		t.Errorf("%s: Get(%s) = reason %q, want the database's %q: it was cached", what, id, got.Reason, "behind-the-cache")
	}
}

// retryOnce runs the first Update's fn in a transaction it then rolls
// back, and runs fn again in a new one, as a store does when its engine
// asks it to retry.
type retryOnce struct {
	order.Store
	retried bool
}

var errRetry = errors.New("retry")

func (r *retryOnce) Update(ctx context.Context, fn func(order.Tx) error) error {
	if !r.retried {
		r.retried = true
		err := r.Store.Update(ctx, func(tx order.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return errRetry
		})
		if !errors.Is(err, errRetry) {
			return err
		}
	}
	return r.Store.Update(ctx, fn)
}

// An order created by a run of the transaction that was rolled back is not
// cached: only what the committed run created is.
func TestRetriedCreateCachesOnlyTheCommittedRun(t *testing.T) {
	e := newEnv(t, time.Minute)
	st := ordercache.New(&retryOnce{Store: e.sql}, e.mem, time.Minute, slog.New(slog.DiscardHandler))
	var runs []order.Order
	ctx := context.Background()
	if err := st.Update(ctx, func(tx order.Tx) error {
		o := newOrder() // a new id each run, as a placement makes
		runs = append(runs, o)
		return tx.Create(ctx, o, o.CreatedAt, "", "")
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if len(runs) != 2 {
		t.Fatalf("fn ran %d times, want 2", len(runs))
	}
	if _, err := st.Get(ctx, runs[0].ID); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("Get(the rolled-back run's order) = %v, want ErrNotFound: a phantom was cached", err)
	}
	e.sneak(t, runs[1].ID, "behind-the-cache")
	e.wantGet(t, "the committed run's order", runs[1].ID, order.Pending, "")
}

// tokensFail is a cache whose Tokens fails, or with stall, waits for its
// context to end first.
type tokensFail struct {
	*cache.Memory
	stall bool
}

func (c tokensFail) Tokens(ctx context.Context, _ ...string) ([]uint64, error) {
	if c.stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("cache down")
}

// Without tokens a new order is invalidated, not cached, and a cache that
// stalls does not hold up the commit.
func TestCreateWithoutTokens(t *testing.T) {
	for _, stall := range []bool{false, true} {
		t.Run(fmt.Sprintf("stall=%v", stall), func(t *testing.T) {
			e := newEnv(t, time.Minute)
			e.st = ordercache.New(e.sql, tokensFail{Memory: e.mem, stall: stall}, time.Minute, slog.New(slog.DiscardHandler))
			o := newOrder()
			ctx := context.Background()
			done := make(chan error, 1)
			go func() {
				done <- e.st.Update(ctx, createTx(o))
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Update: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Update still waiting after 5s: the stalled cache holds up the commit")
			}
			e.wantUncached(t, "a new order without tokens", o.ID)
		})
	}
}

// invalidateFails is a cache whose Invalidate fails, and so refuses no
// fill.
type invalidateFails struct{ *cache.Memory }

func (invalidateFails) Invalidate(context.Context, ...string) error { return errors.New("cache down") }

// An order created and changed in one transaction is not stored as
// created: that is not what the commit left. (Its invalidation fails here,
// so that only not storing it keeps it out of the cache.)
func TestCreatedAndChangedIsNotCached(t *testing.T) {
	e := newEnv(t, time.Minute)
	e.st = ordercache.New(e.sql, invalidateFails{e.mem}, time.Minute, slog.New(slog.DiscardHandler))
	o := newOrder()
	ctx := context.Background()
	if err := e.st.Update(ctx, func(tx order.Tx) error {
		if err := tx.Create(ctx, o, o.CreatedAt, "", ""); err != nil {
			return err
		}
		return tx.SetStatus(ctx, o.ID, order.Pending, order.Confirmed, "", time.Now())
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	e.wantUncached(t, "created and changed", o.ID)
}
