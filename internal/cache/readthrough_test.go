package cache_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache"
)

// broken is a cache whose every call fails, counting the calls.
type broken struct{ gets, tokens, fills, invalidates int }

var errDown = errors.New("cache down")

func (b *broken) Get(context.Context, string) ([]byte, bool, uint64, error) {
	b.gets++
	return nil, false, 0, errDown
}

func (b *broken) Tokens(context.Context, ...string) ([]uint64, error) {
	b.tokens++
	return nil, errDown
}

func (b *broken) Fill(context.Context, time.Duration, ...cache.Entry) error {
	b.fills++
	return errDown
}

func (b *broken) Invalidate(context.Context, ...string) error {
	b.invalidates++
	return errDown
}

// A failing cache is logged and the database answers. Without a token
// from Get or Tokens there is nothing safe to fill with, so no fill is
// tried.
func TestReadThroughSurvivesAFailingCache(t *testing.T) {
	ctx := context.Background()
	b := &broken{}
	rt := cache.NewReadThrough[string](b, time.Minute, slog.New(slog.DiscardHandler))
	v, err := rt.Get(ctx, "k", func(context.Context) (string, error) { return "db", nil })
	if err != nil || v != "db" {
		t.Fatalf("Get = %q, %v; want the database's %q", v, err, "db")
	}
	if b.gets != 1 || b.fills != 0 {
		t.Errorf("cache calls: %d gets, %d fills; want 1 get, no fill", b.gets, b.fills)
	}
	if tokens := rt.Tokens(ctx, []string{"new"}); tokens != nil {
		t.Errorf("Tokens = %v from a failing cache, want nil", tokens)
	}
	rt.Prime(ctx, []string{"new"}, nil, []string{"v"})
	if b.tokens != 1 || b.fills != 0 {
		t.Errorf("cache calls: %d tokens, %d fills; want 1 tokens, no fill", b.tokens, b.fills)
	}
	rt.Invalidate(ctx, []string{"k"})
	if b.invalidates != 1 {
		t.Errorf("invalidations = %d, want 1", b.invalidates)
	}
}

// A failing fill does not fail the read, nor the prime after a commit.
func TestReadThroughSurvivesAFailingFill(t *testing.T) {
	ctx := context.Background()
	rt := cache.NewReadThrough[string](failFill{cache.NewMemory(10)}, time.Minute, slog.New(slog.DiscardHandler))
	v, err := rt.Get(ctx, "k", func(context.Context) (string, error) { return "db", nil })
	if err != nil || v != "db" {
		t.Fatalf("Get = %q, %v; want the database's %q", v, err, "db")
	}
	tokens := rt.Tokens(ctx, []string{"new"})
	if len(tokens) != 1 {
		t.Fatalf("Tokens = %v, want one token", tokens)
	}
	rt.Prime(ctx, []string{"new"}, tokens, []string{"created"})
	if v, err := rt.Get(ctx, "new", func(context.Context) (string, error) { return "db", nil }); err != nil || v != "db" {
		t.Errorf("Get after a failed prime = %q, %v; want the database's %q", v, err, "db")
	}
}

type failFill struct{ *cache.Memory }

func (failFill) Fill(context.Context, time.Duration, ...cache.Entry) error { return errDown }

// A load error is returned and nothing is cached.
func TestReadThroughDoesNotCacheALoadError(t *testing.T) {
	ctx := context.Background()
	m := cache.NewMemory(10)
	rt := cache.NewReadThrough[string](m, time.Minute, slog.New(slog.DiscardHandler))
	boom := errors.New("boom")
	if _, err := rt.Get(ctx, "k", func(context.Context) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("Get: %v, want %v", err, boom)
	}
	if _, found, _, _ := m.Get(ctx, "k"); found {
		t.Fatal("a failed load was cached")
	}
}

// stalled is a cache whose writes wait for their context to end.
type stalled struct{ *cache.Memory }

func (stalled) Fill(ctx context.Context, _ time.Duration, _ ...cache.Entry) error {
	<-ctx.Done()
	return ctx.Err()
}

func (stalled) Invalidate(ctx context.Context, _ ...string) error {
	<-ctx.Done()
	return ctx.Err()
}

// The writes after a commit, which a client's answer waits for, end even
// when the cache stalls and the caller's context has no deadline.
func TestWritesAfterACommitEndWhenTheCacheStalls(t *testing.T) {
	ctx := context.Background()
	rt := cache.NewReadThrough[string](stalled{cache.NewMemory(10)}, time.Minute, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		rt.Invalidate(ctx, []string{"k"})
		rt.Prime(ctx, []string{"new"}, rt.Tokens(ctx, []string{"new"}), []string{"created"})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Invalidate and Prime still waiting on a stalled cache after 10s")
	}
}
