package cache

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
)

// ReadThrough is the cache-aside logic the stores' cache decorators share:
// a read is served from the cache or loaded and filled in, the keys a
// commit changed are invalidated after it, and the keys a commit created
// may be filled (primed) after it. A cache failure is logged and the
// database answers: the cache is never the source of truth.
//
// A read fills the cache with the token its Get returned, so a commit whose
// invalidation lands while the read is loading makes the fill a no-op: a
// slow reader cannot put back the row the commit replaced, whichever
// process the commit ran in. A prime is guarded the same way, by tokens
// taken before its commit. ReadThrough itself keeps no state.
type ReadThrough[V any] struct {
	cache Cache
	ttl   time.Duration
	log   *slog.Logger
}

// NewReadThrough returns a read-through cache over c whose entries live at
// most ttl; log names the cache (e.g. with "cache", "A").
func NewReadThrough[V any](c Cache, ttl time.Duration, log *slog.Logger) *ReadThrough[V] {
	return &ReadThrough[V]{cache: c, ttl: ttl, log: log}
}

// Get returns the value under key, from the cache or else from load.
func (r *ReadThrough[V]) Get(ctx context.Context, key string, load func(context.Context) (V, error)) (V, error) {
	b, ok, token, err := r.cache.Get(ctx, key)
	if err != nil {
		// Without a token there is no safe fill: just read the database.
		r.log.WarnContext(ctx, "cache get failed", "key", key, "err", err)
		return load(ctx)
	}
	if ok {
		var v V
		if err := json.Unmarshal(b, &v); err == nil {
			return v, nil
		}
		// An entry we cannot decode (say, from an older build) is
		// replaced by the fill below.
	}
	v, err := load(ctx)
	if err != nil {
		return v, err
	}
	b, err = json.Marshal(v)
	if err != nil {
		r.log.WarnContext(ctx, "cache encode failed", "key", key, "err", err)
		return v, nil
	}
	if err := r.cache.Fill(ctx, r.ttl, Entry{Key: key, Val: b, Token: token}); err != nil {
		r.log.WarnContext(ctx, "cache fill failed", "key", key, "err", err)
	}
	return v, nil
}

// Tokens returns the version tokens of keys that a transaction is about to
// create, for Prime after its commit; call it before the commit. If the
// cache cannot give them, it logs why and returns nil: Prime then stores
// nothing, and the caller invalidates the keys as after any commit.
func (r *ReadThrough[V]) Tokens(ctx context.Context, keys []string) []uint64 {
	if len(keys) == 0 {
		return nil
	}
	tokens, err := r.cache.Tokens(ctx, keys...)
	if err != nil {
		r.log.WarnContext(ctx, "cache tokens failed; the new entries are left to the first read", "keys", keys, "err", err)
		return nil
	}
	return tokens
}

// Prime stores vals, the values a commit created under keys, guarded by the
// tokens Tokens returned before that commit: a key invalidated since, by a
// later commit in any process sharing the cache, is left alone. So the
// first read of a value just created is a hit, and never a stale one.
func (r *ReadThrough[V]) Prime(ctx context.Context, keys []string, tokens []uint64, vals []V) {
	if len(keys) == 0 || len(tokens) != len(keys) || len(vals) != len(keys) {
		return
	}
	entries := make([]Entry, 0, len(keys))
	for i, v := range vals {
		b, err := json.Marshal(v)
		if err != nil {
			r.log.WarnContext(ctx, "cache encode failed", "key", keys[i], "err", err)
			continue
		}
		entries = append(entries, Entry{Key: keys[i], Val: b, Token: tokens[i]})
	}
	ctx, cancel := afterCommit(ctx)
	defer cancel()
	if err := r.cache.Fill(ctx, r.ttl, entries...); err != nil {
		r.log.WarnContext(ctx, "cache fill failed; the new entries are left to the first read", "keys", keys, "err", err)
	}
}

// Invalidate drops keys and refuses fills of them begun before; call it
// after the commit that changed them.
func (r *ReadThrough[V]) Invalidate(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	ctx, cancel := afterCommit(ctx)
	defer cancel()
	if err := r.cache.Invalidate(ctx, keys...); err != nil {
		r.log.WarnContext(ctx, "cache invalidation failed; entries expire with the TTL", "keys", keys, "err", err)
	}
}

// afterCommitTimeout bounds a cache write made after a commit, whose
// caller (say, a placement waiting for its 202) waits for it: a cache that
// stalls fails it instead, it is logged, and the TTL is the safety net.
const afterCommitTimeout = time.Second

// afterCommit is the context of a cache write after a commit: the commit
// is done, so a cancelled request must not skip the write, but the write
// is bounded by afterCommitTimeout.
func afterCommit(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), afterCommitTimeout)
}
