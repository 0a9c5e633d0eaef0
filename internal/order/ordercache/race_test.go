package ordercache_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/cache/cachetest"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordercache"
)

// slowReader pauses every Get after it has read the database, so a commit
// can land between a reader's database read and its cache fill.
type slowReader struct {
	order.Store
	read, resume chan struct{}
	paused       bool // only the first Get pauses
}

func (s *slowReader) Get(ctx context.Context, id string) (order.Order, error) {
	o, err := s.Store.Get(ctx, id)
	if !s.paused {
		s.paused = true
		s.read <- struct{}{}
		<-s.resume
	}
	return o, err
}

// A reader that loaded the old row before a commit must not put it back in
// the cache after the commit's invalidation: the next read sees the commit.
func TestSlowReaderDoesNotCacheAStaleRow(t *testing.T) {
	e := newEnv(t, time.Hour)
	o := e.create(t)
	slow := &slowReader{Store: e.sql, read: make(chan struct{}), resume: make(chan struct{})}
	st := ordercache.New(slow, cache.NewMemory(100), time.Hour, slog.New(slog.DiscardHandler))

	got := make(chan order.Order)
	go func() {
		o, err := st.Get(context.Background(), o.ID)
		if err != nil {
			t.Error(err)
		}
		got <- o
	}()
	<-slow.read // the reader holds the PENDING row
	ctx := context.Background()
	if err := st.Update(ctx, func(tx order.Tx) error {
		return tx.SetStatus(ctx, o.ID, order.Pending, order.Confirmed, "", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	close(slow.resume)
	if stale := <-got; stale.Status != order.Pending {
		t.Fatalf("the slow read returned %s, want the PENDING it read", stale.Status)
	}
	if now, err := st.Get(ctx, o.ID); err != nil || now.Status != order.Confirmed {
		t.Fatalf("read after the commit: %s (%v), want CONFIRMED: the stale row was cached", now.Status, err)
	}
}

// The same across processes: two decorators over one shared cache, as two
// instances of the order service would have. The reader in A loads the old
// row; B commits; A's fill must be refused, so both then read the commit.
func TestSlowReaderInAnotherProcessDoesNotCacheAStaleRow(t *testing.T) {
	for name, open := range map[string]cachetest.Open{"memory": cachetest.Memory, "redis": redistest.Open} {
		t.Run(name, func(t *testing.T) {
			handle := open(t)
			e := newEnv(t, time.Hour)
			o := e.create(t)
			log := slog.New(slog.DiscardHandler)
			slow := &slowReader{Store: e.sql, read: make(chan struct{}), resume: make(chan struct{})}
			procA := ordercache.New(slow, handle(), time.Hour, log)
			procB := ordercache.New(e.sql, handle(), time.Hour, log)

			got := make(chan order.Order, 1)
			go func() {
				o, err := procA.Get(context.Background(), o.ID)
				if err != nil {
					t.Error(err)
				}
				got <- o
			}()
			<-slow.read // A holds the PENDING row
			ctx := context.Background()
			if err := procB.Update(ctx, func(tx order.Tx) error {
				return tx.SetStatus(ctx, o.ID, order.Pending, order.Confirmed, "", time.Now())
			}); err != nil {
				t.Fatal(err)
			}
			close(slow.resume)
			if stale := <-got; stale.Status != order.Pending {
				t.Fatalf("A's slow read returned %s, want the PENDING it read", stale.Status)
			}
			for name, st := range map[string]*ordercache.Store{"A": procA, "B": procB} {
				if now, err := st.Get(ctx, o.ID); err != nil || now.Status != order.Confirmed {
					t.Errorf("read in %s after B's commit: %s (%v), want CONFIRMED: A's stale row was cached", name, now.Status, err)
				}
			}
		})
	}
}

// hookedCommit runs after once, right after its first committed Update,
// before the decorator over it does anything of its own.
type hookedCommit struct {
	order.Store
	after func()
}

func (h *hookedCommit) Update(ctx context.Context, fn func(order.Tx) error) error {
	err := h.Store.Update(ctx, fn)
	if f := h.after; err == nil && f != nil {
		h.after = nil
		f()
	}
	return err
}

// A creates an order; B commits a change to it right after A's commit,
// before A fills the cache with the order as created (an answer from
// inventory overtaking the placement's fill). A's fill must be refused, so
// both then read B's commit.
func TestCreateFillRefusedAfterALaterCommit(t *testing.T) {
	for name, open := range map[string]cachetest.Open{"memory": cachetest.Memory, "redis": redistest.Open} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			handle := open(t)
			e := newEnv(t, time.Hour)
			log := slog.New(slog.DiscardHandler)
			procB := ordercache.New(e.sql, handle(), time.Hour, log)
			hooked := &hookedCommit{Store: e.sql}
			procA := ordercache.New(hooked, handle(), time.Hour, log)

			o := newOrder()
			hooked.after = func() {
				if err := procB.Update(ctx, setStatus(o.ID, order.Confirmed, "")); err != nil {
					t.Errorf("B's commit: %v", err)
				}
			}
			if err := procA.Update(ctx, createTx(o)); err != nil {
				t.Fatalf("A's create: %v", err)
			}
			for name, st := range map[string]*ordercache.Store{"A": procA, "B": procB} {
				if got, err := st.Get(ctx, o.ID); err != nil || got.Status != order.Confirmed {
					t.Errorf("read in %s after B's commit: %s (%v), want CONFIRMED: A cached the order as created", name, got.Status, err)
				}
			}
		})
	}
}
