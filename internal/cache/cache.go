// Package cache holds the in-process cache that fronts each service's reads
// (cache A for orders, cache B for stock), and ReadThrough, the cache-aside
// logic over it. Values are bytes so that a Redis cache can take its place
// behind the same methods.
package cache

import (
	"context"
	"sync"
	"time"
)

// Memory is a bounded in-process cache with a TTL per entry. The zero value
// is not usable; call NewMemory.
type Memory struct {
	mu      sync.Mutex
	entries map[string]entry
	max     int
	now     func() time.Time
}

type entry struct {
	val     []byte
	expires time.Time
}

// NewMemory returns a cache that holds at most maxEntries entries.
func NewMemory(maxEntries int) *Memory {
	return &Memory{entries: make(map[string]entry), max: max(1, maxEntries), now: time.Now}
}

// Get returns the value stored under key, if it is there and fresh.
func (c *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil, false, nil
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, key)
		return nil, false, nil
	}
	return e.val, true, nil
}

// Set stores val under key for ttl.
func (c *Memory) Set(_ context.Context, key string, val []byte, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		c.evict()
	}
	c.entries[key] = entry{val: val, expires: c.now().Add(ttl)}
	return nil
}

// Delete removes keys; a missing key is no error.
func (c *Memory) Delete(_ context.Context, keys ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
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
