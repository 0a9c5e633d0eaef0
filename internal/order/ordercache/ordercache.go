// Package ordercache fronts an order.Store with cache A: reads of one order
// are served from the cache, every order a committed transaction changed is
// invalidated right after the commit, and every order it created is stored.
// A read fills the cache only if the order was not invalidated while it
// read, by this process or by another sharing the cache (the cache's
// versioned writes see to that), and a new order only if it was not
// invalidated since just before its commit; the TTL is the safety net
// behind it, for an invalidation lost to a cache failure.
package ordercache

import (
	"context"
	"log/slog"
	"slices"
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
	// cache write after it; nil records nothing.
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

// tokensTimeout bounds the cache call Update makes inside the transaction,
// before its commit (a round trip to Redis, or a lock of the in-process
// cache): it holds the transaction's locks, on SQLite the only writer's.
const tokensTimeout = 50 * time.Millisecond

// Update runs fn and, after the commit, invalidates every order it changed
// and fills the cache with every order it created, so that the first read
// of a new order (a client asking for its outcome right after the 202) is
// a hit. The new orders' tokens are taken before the commit: a later
// commit's invalidation, in this process or another, refuses the fill.
//
// A created order is invalidated instead, as a changed one, when the
// transaction also changed it, or when the cache gave no tokens (it failed,
// or took longer than tokensTimeout).
//
// A changed order is only invalidated, never stored so: a fill does not
// bump the key's version, so a reader or another writer holding the same
// token from before this commit could still store its older row after
// it. A new order has no older row for anyone to bring back.
func (s *Store) Update(ctx context.Context, fn func(order.Tx) error) error {
	var (
		tt      trackingTx
		tokens  []uint64
		parents telemetry.Parents // the traces the transaction serves
	)
	start := time.Now()
	err := s.next.Update(ctx, func(tx order.Tx) error {
		// A retried transaction starts over.
		tt = trackingTx{Tx: tx, changed: tt.changed[:0], created: tt.created[:0], parents: &parents}
		parents, tokens = parents[:0], nil
		if err := fn(&tt); err != nil {
			return err
		}
		if len(tt.created) > 0 {
			// The cache must not hold up the commit: past tokensTimeout
			// the new orders are invalidated instead, as changed ones.
			tctx, cancel := context.WithTimeout(ctx, tokensTimeout)
			tokens = s.cache.Tokens(tctx, tt.createdKeys())
			cancel()
		}
		return nil
	})
	ended := time.Now()
	if err == nil {
		fill, fillTokens, orders, stale := tt.split(tokens)
		s.cache.Invalidate(ctx, stale)
		s.cache.Prime(ctx, fill, fillTokens, orders)
	}
	if s.tracer != nil && len(parents) > 0 {
		telemetry.Record(ctx, s.tracer, parents, "order DB A transaction", start, ended, err, attribute.Int("converge.orders", len(tt.changed)+len(tt.created)))
		if err == nil {
			telemetry.Record(ctx, s.tracer, parents, "order cache A write", ended, time.Now(), nil)
		}
	}
	return err
}

// Trace makes Update record, under the trace of each order it served, a
// span for the transaction and one for the cache write after it.
func (s *Store) Trace(tr trace.Tracer) { s.tracer = tr }

// trackingTx records the orders a transaction writes: the keys of those it
// changed, and those it created as they were stored.
type trackingTx struct {
	order.Tx
	changed []string
	created []order.Order
	parents *telemetry.Parents
}

func (t *trackingTx) Claim(ctx context.Context, e events.Envelope) (bool, error) {
	t.parents.Add(ctx)
	return t.Tx.Claim(ctx, e)
}

func (t *trackingTx) Create(ctx context.Context, o order.Order, accepted time.Time, k, hash string) error {
	t.parents.Add(ctx)
	if err := t.Tx.Create(ctx, o, accepted, k, hash); err != nil {
		return err
	}
	// As the store keeps it, and a read returns it (order.Tx.Create).
	o.CreatedAt, o.UpdatedAt = micros(o.CreatedAt), micros(o.UpdatedAt)
	t.created = append(t.created, o)
	return nil
}

// micros is t to the microsecond, in UTC.
func micros(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()).UTC() }

func (t *trackingTx) SetStatus(ctx context.Context, id string, from, to order.Status, reason string, at time.Time) error {
	t.parents.Add(ctx)
	t.changed = append(t.changed, key(id))
	return t.Tx.SetStatus(ctx, id, from, to, reason, at)
}

func (t *trackingTx) createdKeys() []string {
	keys := make([]string, len(t.created))
	for i, o := range t.created {
		keys[i] = key(o.ID)
	}
	return keys
}

// split sorts out what the committed transaction wrote, given the tokens
// taken before its commit for every order it created, in order: the orders
// to fill, with their keys and tokens, and the keys to invalidate. Those
// are the changed orders, plus any created order that was changed too, or
// every created order if there are no tokens.
func (t *trackingTx) split(tokens []uint64) (keys []string, kept []uint64, orders []order.Order, stale []string) {
	stale = slices.Clone(t.changed)
	if len(t.created) == 0 {
		return nil, nil, nil, stale
	}
	if len(tokens) != len(t.created) {
		return nil, nil, nil, append(stale, t.createdKeys()...)
	}
	for i, o := range t.created {
		k := key(o.ID)
		if slices.Contains(t.changed, k) {
			continue // invalidated with the changed ones
		}
		keys, kept, orders = append(keys, k), append(kept, tokens[i]), append(orders, o)
	}
	return keys, kept, orders, stale
}
