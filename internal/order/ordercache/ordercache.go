// Package ordercache fronts an order.Store with cache A: reads of one order
// are served from the cache, and every order a committed transaction touched
// is invalidated right after the commit. A read fills the cache only if the
// order was not invalidated while it read, by this process or by another
// sharing the cache (the cache's versioned writes see to that); the TTL is
// the safety net behind it, for an invalidation lost to a cache failure.
package ordercache

import (
	"context"
	"log/slog"
	"time"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/order"
)

// Store is an order.Store with a read-through cache.
type Store struct {
	next  order.Store
	cache *cache.ReadThrough[order.Order]
}

var _ order.Store = (*Store)(nil)

// New returns next fronted by cache, whose entries live at most ttl.
func New(next order.Store, c cache.Cache, ttl time.Duration, log *slog.Logger) *Store {
	return &Store{next: next, cache: cache.NewReadThrough[order.Order](c, ttl, log.With("cache", "A"))}
}

func key(id string) string { return "order:" + id }

// Get reads through the cache. A cache failure is logged and the database
// answers: the cache is never the source of truth.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	return s.cache.Get(ctx, key(id), func(ctx context.Context) (order.Order, error) { return s.next.Get(ctx, id) })
}

// List is not cached: pages change with every new order.
func (s *Store) List(ctx context.Context, f order.Filter) ([]order.Order, error) {
	return s.next.List(ctx, f)
}

// Update runs fn and, after the commit, invalidates every order it wrote.
func (s *Store) Update(ctx context.Context, fn func(order.Tx) error) error {
	var touched []string
	err := s.next.Update(ctx, func(tx order.Tx) error {
		touched = touched[:0] // a retried transaction starts over
		return fn(&trackingTx{Tx: tx, touched: &touched})
	})
	if err == nil {
		s.cache.Invalidate(ctx, touched)
	}
	return err
}

// trackingTx records the ids of the orders a transaction writes.
type trackingTx struct {
	order.Tx
	touched *[]string
}

func (t *trackingTx) Create(ctx context.Context, o order.Order, k, hash string) error {
	*t.touched = append(*t.touched, key(o.ID))
	return t.Tx.Create(ctx, o, k, hash)
}

func (t *trackingTx) SetStatus(ctx context.Context, id string, from, to order.Status, reason string, at time.Time) error {
	*t.touched = append(*t.touched, key(id))
	return t.Tx.SetStatus(ctx, id, from, to, reason, at)
}
