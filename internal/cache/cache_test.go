package cache

import (
	"context"
	"strconv"
	"testing"
	"time"
)

func TestMemoryBoundAndClock(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	c := NewMemory(2)
	c.now = func() time.Time { return now }

	get := func(key string) ([]byte, bool, uint64) {
		t.Helper()
		v, ok, tok, err := c.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get(%s): %v", key, err)
		}
		return v, ok, tok
	}
	fill := func(key, val string, ttl time.Duration) {
		t.Helper()
		_, _, tok := get(key)
		if err := c.Fill(ctx, ttl, Entry{Key: key, Val: []byte(val), Token: tok}); err != nil {
			t.Fatalf("Fill(%s): %v", key, err)
		}
	}

	fill("a", "1", time.Second)
	if v, ok, _ := get("a"); !ok || string(v) != "1" {
		t.Fatalf("Get(a) = %q, %v; want 1, true", v, ok)
	}
	now = now.Add(time.Second)
	if _, ok, _ := get("a"); ok {
		t.Fatal("expired entry returned")
	}
	fill("a", "1", time.Minute)
	fill("b", "2", time.Minute)
	fill("c", "3", time.Minute)
	if n := len(c.entries); n != 2 {
		t.Fatalf("entries = %d, want the bound 2", n)
	}
	if v, ok, _ := get("c"); !ok || string(v) != "3" {
		t.Fatalf("Get(c) = %q, %v; want 3, true", v, ok)
	}
}

// Invalidating many distinct keys must not grow the cache's memory: the
// versions live in a fixed array, whatever the keys.
func TestMemoryVersionsAreBounded(t *testing.T) {
	ctx := context.Background()
	c := NewMemory(10)
	for i := range 10_000 {
		if err := c.Invalidate(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n != 0 {
		t.Fatalf("entries = %d after only invalidations, want 0", n)
	}
	var sum uint64
	for _, v := range c.versions {
		sum += v
	}
	if sum != 10_000 {
		t.Fatalf("sum of versions = %d, want one bump per invalidated key (10000)", sum)
	}
}
