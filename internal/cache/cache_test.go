package cache

import (
	"context"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1000, 0)
	c := NewMemory(2)
	c.now = func() time.Time { return now }

	if _, ok, _ := c.Get(ctx, "a"); ok {
		t.Fatal("empty cache returned a value")
	}
	_ = c.Set(ctx, "a", []byte("1"), time.Second)
	if v, ok, _ := c.Get(ctx, "a"); !ok || string(v) != "1" {
		t.Fatalf("Get(a) = %q, %v; want 1, true", v, ok)
	}
	now = now.Add(time.Second)
	if _, ok, _ := c.Get(ctx, "a"); ok {
		t.Fatal("expired entry returned")
	}
	_ = c.Set(ctx, "a", []byte("1"), time.Minute)
	_ = c.Set(ctx, "b", []byte("2"), time.Minute)
	_ = c.Set(ctx, "c", []byte("3"), time.Minute)
	if n := len(c.entries); n != 2 {
		t.Fatalf("entries = %d, want the bound 2", n)
	}
	if v, ok, _ := c.Get(ctx, "c"); !ok || string(v) != "3" {
		t.Fatalf("Get(c) = %q, %v; want 3, true", v, ok)
	}
	_ = c.Delete(ctx, "c", "missing")
	if _, ok, _ := c.Get(ctx, "c"); ok {
		t.Fatal("deleted entry returned")
	}
}
