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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/telemetry"
)

// Store is an inventory.Store with a read-through cache.
type Store struct {
	next inventory.Store
	// tracer records, under each order's trace, the transaction and the
	// invalidation that served it; nil records nothing.
	tracer trace.Tracer
	cache  *cache.ReadThrough[inventory.Item]
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

// Record is not cached: it is read rarely, and must be complete.
func (s *Store) Record(ctx context.Context, orderID string) (inventory.Record, error) {
	return s.next.Record(ctx, orderID)
}

// Update runs fn and, after the commit, invalidates every SKU it changed.
func (s *Store) Update(ctx context.Context, fn func(inventory.Tx) error) error {
	var (
		touched []string
		parents telemetry.Parents // the traces the transaction serves
	)
	start := time.Now()
	err := s.next.Update(ctx, func(tx inventory.Tx) error {
		touched, parents = touched[:0], parents[:0]
		return fn(&trackingTx{Tx: tx, touched: &touched, parents: &parents})
	})
	ended := time.Now()
	if err == nil {
		s.cache.Invalidate(ctx, touched)
	}
	if s.tracer != nil && len(parents) > 0 {
		telemetry.Record(ctx, s.tracer, parents, "inventory DB B transaction", start, ended, err, attribute.Int("converge.skus", len(touched)))
		if err == nil {
			telemetry.Record(ctx, s.tracer, parents, "inventory cache B invalidate", ended, time.Now(), nil)
		}
	}
	return err
}

// Trace makes Update record, under the trace of each order it served, a
// span for the transaction and one for the cache invalidation after it.
func (s *Store) Trace(tr trace.Tracer) { s.tracer = tr }

// trackingTx records the SKUs a transaction changes.
type trackingTx struct {
	inventory.Tx
	touched *[]string
	parents *telemetry.Parents
}

func (t *trackingTx) Claim(ctx context.Context, e events.Envelope) (bool, error) {
	t.parents.Add(ctx)
	return t.Tx.Claim(ctx, e)
}

func (t *trackingTx) SetOnHand(ctx context.Context, sku string, onHand int64, at time.Time) (inventory.Item, error) {
	t.parents.Add(ctx)
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.SetOnHand(ctx, sku, onHand, at)
}

func (t *trackingTx) Reserve(ctx context.Context, sku string, qty int, at time.Time) error {
	t.parents.Add(ctx)
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.Reserve(ctx, sku, qty, at)
}

func (t *trackingTx) Release(ctx context.Context, sku string, qty int, at time.Time) error {
	t.parents.Add(ctx)
	*t.touched = append(*t.touched, key(sku))
	return t.Tx.Release(ctx, sku, qty, at)
}
