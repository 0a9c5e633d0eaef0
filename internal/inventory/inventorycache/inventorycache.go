// Package inventorycache fronts an inventory.Store with cache B: reads of
// one SKU come from the cache, and every SKU a committed transaction touched
// is invalidated right after the commit. A read fills the cache only if the
// SKU was not invalidated while it read, by this process or by another
// sharing the cache; the TTL is the safety net behind it, for an
// invalidation lost to a cache failure.
package inventorycache

import (
	"context"
	"log/slog"
	"time"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/inventory"
)

// Store is an inventory.Store with a read-through cache.
type Store struct {
	next  inventory.Store
	cache *cache.ReadThrough[inventory.Item]
}

var _ inventory.Store = (*Store)(nil)

// New returns next fronted by cache, whose entries live at most ttl.
func New(next inventory.Store, c cache.Cache, ttl time.Duration, log *slog.Logger) *Store {
	return &Store{next: next, cache: cache.NewReadThrough[inventory.Item](c, ttl, log.With("cache", "B"))}
}

func key(sku string) string { return "stock:" + sku }

// Get reads through the cache; a cache failure falls back to the database.
func (s *Store) Get(ctx context.Context, sku string) (inventory.Item, error) {
	return s.cache.Get(ctx, key(sku), func(ctx context.Context) (inventory.Item, error) { return s.next.Get(ctx, sku) })
}

// List is not cached.
func (s *Store) List(ctx context.Context, after string, limit int) ([]inventory.Item, error) {
	return s.next.List(ctx, after, limit)
}

// Update runs fn and, after the commit, invalidates every SKU it changed.
func (s *Store) Update(ctx context.Context, fn func(inventory.Tx) error) error {
	var touched []string
	err := s.next.Update(ctx, func(tx inventory.Tx) error {
		touched = touched[:0]
		return fn(&trackingTx{Tx: tx, touched: &touched})
	})
	if err == nil {
		s.cache.Invalidate(ctx, touched)
	}
	return err
}

// trackingTx records the SKUs a transaction changes.
type trackingTx struct {
	inventory.Tx
	touched *[]string
}

func (t *trackingTx) SetOnHand(ctx context.Context, sku string, onHand int64, at time.Time) (inventory.Item, error) {
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.SetOnHand(ctx, sku, onHand, at)
}

func (t *trackingTx) Reserve(ctx context.Context, sku string, qty int, at time.Time) error {
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.Reserve(ctx, sku, qty, at)
}

func (t *trackingTx) Release(ctx context.Context, sku string, qty int, at time.Time) error {
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.Release(ctx, sku, qty, at)
}
