package cache

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"
)

// Cache is what a read-through cache stores into: Memory, and later Redis.
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Delete(ctx context.Context, keys ...string) error
}

// ReadThrough is the cache-aside logic the stores' cache decorators share:
// a read is served from the cache or loaded and stored, and the keys a
// commit touched are deleted after it. A cache failure is logged and the
// database answers: the cache is never the source of truth.
type ReadThrough[V any] struct {
	cache Cache
	ttl   time.Duration
	log   *slog.Logger
	// gen counts invalidations. A read stores what it loaded only if no
	// invalidation happened meanwhile, so a slow reader cannot put back a
	// row that a concurrent commit has just replaced.
	gen atomic.Uint64
}

// NewReadThrough returns a read-through cache over c whose entries live at
// most ttl; log names the cache (e.g. with "cache", "A").
func NewReadThrough[V any](c Cache, ttl time.Duration, log *slog.Logger) *ReadThrough[V] {
	return &ReadThrough[V]{cache: c, ttl: ttl, log: log}
}

// Get returns the value under key, from the cache or else from load.
func (r *ReadThrough[V]) Get(ctx context.Context, key string, load func(context.Context) (V, error)) (V, error) {
	if b, ok, err := r.cache.Get(ctx, key); err != nil {
		r.log.WarnContext(ctx, "cache get failed", "key", key, "err", err)
	} else if ok {
		var v V
		if err := json.Unmarshal(b, &v); err == nil {
			return v, nil
		}
	}
	gen := r.gen.Load()
	v, err := load(ctx)
	if err != nil || r.gen.Load() != gen {
		return v, err
	}
	if b, err := json.Marshal(v); err == nil {
		if err := r.cache.Set(ctx, key, b, r.ttl); err != nil {
			r.log.WarnContext(ctx, "cache set failed", "key", key, "err", err)
		}
	}
	return v, nil
}

// Invalidate deletes keys; call it after the commit that changed them.
func (r *ReadThrough[V]) Invalidate(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	r.gen.Add(1)
	if err := r.cache.Delete(context.WithoutCancel(ctx), keys...); err != nil {
		r.log.WarnContext(ctx, "cache invalidation failed; entries expire with the TTL", "keys", keys, "err", err)
	}
}
