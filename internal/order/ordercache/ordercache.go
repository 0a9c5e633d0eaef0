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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/telemetry"
)

// Store is an order.Store with a read-through cache.
type Store struct {
	next order.Store
	// tracer records, under each order's trace, the transaction and the
	// invalidation that served it; nil records nothing.
	tracer trace.Tracer
	cache  *cache.ReadThrough[order.Order]
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

// Record is not cached: it is read rarely, and must be complete.
func (s *Store) Record(ctx context.Context, id string) (order.Record, error) {
	return s.next.Record(ctx, id)
}

// Update runs fn and, after the commit, invalidates every order it wrote.
func (s *Store) Update(ctx context.Context, fn func(order.Tx) error) error {
	var (
		touched []string
		parents telemetry.Parents // the traces the transaction serves
	)
	start := time.Now()
	err := s.next.Update(ctx, func(tx order.Tx) error {
		touched, parents = touched[:0], parents[:0] // a retried transaction starts over
		return fn(&trackingTx{Tx: tx, touched: &touched, parents: &parents})
	})
	ended := time.Now()
	if err == nil {
		s.cache.Invalidate(ctx, touched)
	}
	if s.tracer != nil && len(parents) > 0 {
		telemetry.Record(ctx, s.tracer, parents, "order DB A transaction", start, ended, err, attribute.Int("converge.orders", len(touched)))
		if err == nil {
			telemetry.Record(ctx, s.tracer, parents, "order cache A invalidate", ended, time.Now(), nil)
		}
	}
	return err
}

// Trace makes Update record, under the trace of each order it served, a
// span for the transaction and one for the cache invalidation after it.
func (s *Store) Trace(tr trace.Tracer) { s.tracer = tr }

// trackingTx records the ids of the orders a transaction writes.
type trackingTx struct {
	order.Tx
	touched *[]string
	parents *telemetry.Parents
}

func (t *trackingTx) Claim(ctx context.Context, e events.Envelope) (bool, error) {
	t.parents.Add(ctx)
	return t.Tx.Claim(ctx, e)
}

func (t *trackingTx) Create(ctx context.Context, o order.Order, accepted time.Time, k, hash string) error {
	t.parents.Add(ctx)
	*t.touched = append(*t.touched, key(o.ID))
	return t.Tx.Create(ctx, o, accepted, k, hash)
}

func (t *trackingTx) SetStatus(ctx context.Context, id string, from, to order.Status, reason string, at time.Time) error {
	t.parents.Add(ctx)
	*t.touched = append(*t.touched, key(id))
	return t.Tx.SetStatus(ctx, id, from, to, reason, at)
}
