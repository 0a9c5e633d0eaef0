package inventorycache_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache/cachetest"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorycache"
)

// slowReader pauses its first Get after it has read the database, so a
// commit can land between a reader's database read and its cache fill.
type slowReader struct {
	inventory.Store
	read, resume chan struct{}
	paused       bool
}

func (s *slowReader) Get(ctx context.Context, sku string) (inventory.Item, error) {
	it, err := s.Store.Get(ctx, sku)
	if !s.paused {
		s.paused = true
		s.read <- struct{}{}
		<-s.resume
	}
	return it, err
}

// Two decorators over one shared cache, as two inventory service instances
// would have: the reader in A loads the old stock, B commits a new count,
// and A's fill must be refused so that both then read B's count.
func TestSlowReaderInAnotherProcessDoesNotCacheStaleStock(t *testing.T) {
	for name, open := range map[string]cachetest.Open{"memory": cachetest.Memory, "redis": redistest.Open} {
		t.Run(name, func(t *testing.T) {
			handle := open(t)
			e := newEnv(t, time.Hour)
			e.set(t, "A", 10)
			log := slog.New(slog.DiscardHandler)
			slow := &slowReader{Store: e.sql, read: make(chan struct{}), resume: make(chan struct{})}
			procA := inventorycache.New(slow, handle(), time.Hour, log)
			procB := inventorycache.New(e.sql, handle(), time.Hour, log)

			got := make(chan inventory.Item, 1)
			go func() {
				it, err := procA.Get(context.Background(), "A")
				if err != nil {
					t.Error(err)
				}
				got <- it
			}()
			<-slow.read // A holds on_hand 10
			ctx := context.Background()
			if err := procB.Update(ctx, func(tx inventory.Tx) error {
				_, err := tx.SetOnHand(ctx, "A", 4, time.Now())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			close(slow.resume)
			if stale := <-got; stale.OnHand != 10 {
				t.Fatalf("A's slow read returned on_hand %d, want the 10 it read", stale.OnHand)
			}
			for name, st := range map[string]*inventorycache.Store{"A": procA, "B": procB} {
				if now, err := st.Get(ctx, "A"); err != nil || now.OnHand != 4 {
					t.Errorf("read in %s after B's commit: on_hand %d (%v), want 4: A's stale stock was cached", name, now.OnHand, err)
				}
			}
		})
	}
}
