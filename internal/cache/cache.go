// Package cache holds the cache that fronts each service's reads (cache A for
// orders, cache B for stock) and ReadThrough, the cache-aside logic over it.
// The Cache interface carries versioned writes so that the guard against a
// slow reader putting back a stale row lives in the cache itself, where every
// process sharing the cache sees it. Memory is the in-process cache; Open
// also gives a Redis one (package rediscache) behind the same interface.
package cache

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// Cache is what a read-through cache stores into. A reader takes a token
// from Get, loads from the database on a miss, and hands the token back to
// Fill; an Invalidate of the key in between, from this process or another
// one sharing the cache, makes the Fill a no-op. That is what keeps a slow
// reader from storing a row older than the database's. A writer that
// creates keys takes their tokens from Tokens before its commit and fills
// them after it, under the same guard.
type Cache interface {
	// Get returns the value under key, if any, and a token for the key's
	// current version.
	Get(ctx context.Context, key string) (val []byte, found bool, token uint64, err error)
	// Tokens returns a token for the current version of each key, as Get
	// would, without reading the values.
	Tokens(ctx context.Context, keys ...string) ([]uint64, error)
	// Fill stores each entry's value under its key for ttl, but only if
	// the key has not been invalidated since the Get or Tokens that
	// returned the entry's token. A refused entry is not an error; a ttl
	// of zero or less stores nothing.
	Fill(ctx context.Context, ttl time.Duration, entries ...Entry) error
	// Invalidate deletes keys and bumps their versions, so that fills of
	// them begun before are refused. A missing key is no error.
	Invalidate(ctx context.Context, keys ...string) error
}

// Entry is one value to Fill: Val under Key, guarded by Token, from the
// Get or Tokens taken before the value was read or committed. It is an
// alias of a plain struct type so that package rediscache, which this
// package imports, can declare the same type and satisfy Cache.
type Entry = struct {
	Key   string
	Val   []byte
	Token uint64
}

// versionStripes is how many version counters a Memory keeps. Keys share
// counters by hash, so memory stays fixed however many keys are
// invalidated; two keys sharing a counter only cost an occasional refused
// fill, never a stale one.
const versionStripes = 1024

// Memory is a bounded in-process cache with a TTL per entry. The zero value
// is not usable; call NewMemory.
type Memory struct {
	mu       sync.Mutex
	entries  map[string]entry
	max      int
	now      func() time.Time
	seed     maphash.Seed
	versions [versionStripes]uint64 // bumped by Invalidate; never reset
}

var _ Cache = (*Memory)(nil)

type entry struct {
	val     []byte
	expires time.Time
}

// NewMemory returns a cache that holds at most maxEntries entries.
func NewMemory(maxEntries int) *Memory {
	return &Memory{
		entries: make(map[string]entry),
		max:     max(1, maxEntries),
		now:     time.Now,
		seed:    maphash.MakeSeed(),
	}
}

// stripe returns the index of the version counter that guards key.
func (c *Memory) stripe(key string) int {
	return int(maphash.String(c.seed, key) % versionStripes)
}

// Get returns the value stored under key, if it is there and fresh, and the
// key's version token.
func (c *Memory) Get(_ context.Context, key string) ([]byte, bool, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	token := c.versions[c.stripe(key)]
	e, ok := c.entries[key]
	if !ok {
		return nil, false, token, nil
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, key)
		return nil, false, token, nil
	}
	return e.val, true, token, nil
}

// Tokens returns the version token of each key.
func (c *Memory) Tokens(_ context.Context, keys ...string) ([]uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tokens := make([]uint64, len(keys))
	for i, k := range keys {
		tokens[i] = c.versions[c.stripe(k)]
	}
	return tokens, nil
}

// Fill stores each entry for ttl unless its key was invalidated since the
// Get or Tokens that returned its token.
func (c *Memory) Fill(_ context.Context, ttl time.Duration, entries ...Entry) error {
	if ttl <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		if c.versions[c.stripe(e.Key)] != e.Token {
			continue
		}
		if _, ok := c.entries[e.Key]; !ok && len(c.entries) >= c.max {
			c.evict()
		}
		c.entries[e.Key] = entry{val: e.Val, expires: c.now().Add(ttl)}
	}
	return nil
}

// Invalidate removes keys and bumps their versions.
func (c *Memory) Invalidate(_ context.Context, keys ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.versions[c.stripe(k)]++
		delete(c.entries, k)
	}
	return nil
}

// evict drops expired entries, or, if none has expired, one arbitrary entry
// (Go's map order is random enough to spread the loss).
func (c *Memory) evict() {
	now := c.now()
	dropped := false
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
			dropped = true
		}
	}
	if dropped {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}
