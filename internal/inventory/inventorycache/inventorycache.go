// Package inventorycache fronts an inventory.Store with cache B: reads of
// one SKU come from the cache, and every SKU a committed transaction touched
// is dropped right after the commit. A read fills the cache only if no
// invalidation happened while it read; the TTL is the safety net behind it.
package inventorycache

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/convergehq/converge/internal/inventory"
)

// Cache is the cache this decorator needs.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Delete(ctx context.Context, keys ...string) error
}

// Store is an inventory.Store with a read-through cache.
type Store struct {
	next  inventory.Store
	cache Cache
	ttl   time.Duration
	log   *slog.Logger
	// gen counts invalidations. A read stores what it loaded only if no
	// invalidation happened meanwhile, so a slow reader cannot put back a
	// row that a concurrent commit has just replaced.
	gen atomic.Uint64
}

var _ inventory.Store = (*Store)(nil)

// New returns next fronted by cache, whose entries live at most ttl.
func New(next inventory.Store, cache Cache, ttl time.Duration, log *slog.Logger) *Store {
	return &Store{next: next, cache: cache, ttl: ttl, log: log}
}

func key(sku string) string { return "stock:" + sku }

// Get reads through the cache; a cache failure falls back to the database.
func (s *Store) Get(ctx context.Context, sku string) (inventory.Item, error) {
	if b, ok, err := s.cache.Get(ctx, key(sku)); err != nil {
		s.log.WarnContext(ctx, "cache B get failed", "sku", sku, "err", err)
	} else if ok {
		var it inventory.Item
		if err := json.Unmarshal(b, &it); err == nil {
			return it, nil
		}
	}
	gen := s.gen.Load()
	it, err := s.next.Get(ctx, sku)
	if err != nil {
		return inventory.Item{}, err
	}
	if s.gen.Load() != gen {
		return it, nil
	}
	if b, err := json.Marshal(it); err == nil {
		if err := s.cache.Set(ctx, key(sku), b, s.ttl); err != nil {
			s.log.WarnContext(ctx, "cache B set failed", "sku", sku, "err", err)
		}
	}
	return it, nil
}

// List is not cached.
func (s *Store) List(ctx context.Context, after string, limit int) ([]inventory.Item, error) {
	return s.next.List(ctx, after, limit)
}

// Update runs fn and, after the commit, drops every SKU it changed.
func (s *Store) Update(ctx context.Context, fn func(inventory.Tx) error) error {
	var touched []string
	err := s.next.Update(ctx, func(tx inventory.Tx) error {
		touched = touched[:0]
		return fn(&trackingTx{Tx: tx, touched: &touched})
	})
	if err == nil && len(touched) > 0 {
		s.gen.Add(1)
		if derr := s.cache.Delete(context.WithoutCancel(ctx), touched...); derr != nil {
			s.log.WarnContext(ctx, "cache B invalidation failed; entries expire with the TTL", "skus", touched, "err", derr)
		}
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
