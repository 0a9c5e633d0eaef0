// Package ordercache fronts an order.Store with cache A: reads of one order
// are served from the cache, and every order a committed transaction touched
// is dropped from it right after the commit. A read fills the cache only if
// no invalidation happened while it read; the TTL is the safety net behind
// that (for a cache shared by several processes, where this process cannot
// see the others' invalidations).
package ordercache

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/convergehq/converge/internal/order"
)

// Cache is the cache this decorator needs; the in-process cache implements
// it, and so will a Redis one.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Delete(ctx context.Context, keys ...string) error
}

// Store is an order.Store with a read-through cache.
type Store struct {
	next  order.Store
	cache Cache
	ttl   time.Duration
	log   *slog.Logger
	// gen counts invalidations. A read stores what it loaded only if no
	// invalidation happened meanwhile, so a slow reader cannot put back a
	// row that a concurrent commit has just replaced.
	gen atomic.Uint64
}

var _ order.Store = (*Store)(nil)

// New returns next fronted by cache, whose entries live at most ttl.
func New(next order.Store, cache Cache, ttl time.Duration, log *slog.Logger) *Store {
	return &Store{next: next, cache: cache, ttl: ttl, log: log}
}

func key(id string) string { return "order:" + id }

// Get reads through the cache. A cache failure is logged and the database
// answers: the cache is never the source of truth.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	if b, ok, err := s.cache.Get(ctx, key(id)); err != nil {
		s.log.WarnContext(ctx, "cache A get failed", "id", id, "err", err)
	} else if ok {
		var o order.Order
		if err := json.Unmarshal(b, &o); err == nil {
			return o, nil
		}
	}
	gen := s.gen.Load()
	o, err := s.next.Get(ctx, id)
	if err != nil {
		return order.Order{}, err
	}
	if s.gen.Load() != gen {
		return o, nil
	}
	if b, err := json.Marshal(o); err == nil {
		if err := s.cache.Set(ctx, key(id), b, s.ttl); err != nil {
			s.log.WarnContext(ctx, "cache A set failed", "id", id, "err", err)
		}
	}
	return o, nil
}

// List is not cached: pages change with every new order.
func (s *Store) List(ctx context.Context, f order.Filter) ([]order.Order, error) {
	return s.next.List(ctx, f)
}

// Update runs fn and, after the commit, drops every order it wrote.
func (s *Store) Update(ctx context.Context, fn func(order.Tx) error) error {
	var touched []string
	err := s.next.Update(ctx, func(tx order.Tx) error {
		touched = touched[:0] // a retried transaction starts over
		return fn(&trackingTx{Tx: tx, touched: &touched})
	})
	if err == nil && len(touched) > 0 {
		s.gen.Add(1)
		if derr := s.cache.Delete(context.WithoutCancel(ctx), touched...); derr != nil {
			s.log.WarnContext(ctx, "cache A invalidation failed; entries expire with the TTL", "ids", touched, "err", derr)
		}
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

func (t *trackingTx) SetStatus(ctx context.Context, id string, st order.Status, reason string, at time.Time) error {
	*t.touched = append(*t.touched, key(id))
	return t.Tx.SetStatus(ctx, id, st, reason, at)
}
