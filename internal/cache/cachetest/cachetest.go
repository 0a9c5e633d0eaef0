// Package cachetest is the contract every cache.Cache must meet, as a test
// suite: run it from each implementation's tests with Run.
package cachetest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache"
)

// Open prepares a fresh, empty cache for one test, cleaned up when the test
// ends, and returns a function that opens a handle on it. Each call of the
// handle function is what one process would hold: for a shared cache such
// as Redis a separate client, for an in-process cache the same value.
type Open func(t *testing.T) (handle func() cache.Cache)

// Memory is the Open for cache.Memory: every handle is the same value, as
// an in-process cache is private to its process.
func Memory(t *testing.T) func() cache.Cache {
	m := cache.NewMemory(1000)
	return func() cache.Cache { return m }
}

// Run runs the contract suite against the caches that open makes.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"MissingKey", testMissingKey},
		{"FillThenGet", testFillThenGet},
		{"Invalidate", testInvalidate},
		{"TTL", testTTL},
		{"FillRefusedAfterInvalidate", testFillRefusedAfterInvalidate},
		{"InvalidationSeenByPeer", testInvalidationSeenByPeer},
		{"SlowReaderInOtherProcess", testSlowReaderInOtherProcess},
		{"TokensGuardFills", testTokensGuardFills},
		{"NothingToDo", testNothingToDo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func get(t testing.TB, c cache.Cache, key string) (val string, found bool, token uint64) {
	t.Helper()
	b, found, token, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(b), found, token
}

func fill(t testing.TB, c cache.Cache, key, val string, token uint64, ttl time.Duration) {
	t.Helper()
	if err := c.Fill(context.Background(), ttl, cache.Entry{Key: key, Val: []byte(val), Token: token}); err != nil {
		t.Fatalf("Fill(%q): %v", key, err)
	}
}

func invalidate(t testing.TB, c cache.Cache, keys ...string) {
	t.Helper()
	if err := c.Invalidate(context.Background(), keys...); err != nil {
		t.Fatalf("Invalidate(%q): %v", keys, err)
	}
}

func wantValue(t testing.TB, what string, c cache.Cache, key, want string) {
	t.Helper()
	if got, found, _ := get(t, c, key); !found || got != want {
		t.Errorf("%s: Get(%q) = %q, %v; want %q, true", what, key, got, found, want)
	}
}

func wantMissing(t testing.TB, what string, c cache.Cache, key string) {
	t.Helper()
	if got, found, _ := get(t, c, key); found {
		t.Errorf("%s: Get(%q) = %q, true; want a miss", what, key, got)
	}
}

func testMissingKey(t *testing.T, open Open) {
	c := open(t)()
	wantMissing(t, "fresh cache", c, "nope")
	invalidate(t, c, "nope", "nope-either")
	invalidate(t, c)
	wantMissing(t, "after invalidating it", c, "nope")
}

func testFillThenGet(t *testing.T, open Open) {
	c := open(t)()
	_, _, tok := get(t, c, "k")
	fill(t, c, "k", "v1", tok, time.Minute)
	wantValue(t, "after fill", c, "k", "v1")
	wantMissing(t, "another key", c, "k2")

	// A hit's token is good for replacing the entry (ReadThrough does so
	// with an entry it cannot decode).
	_, _, tok = get(t, c, "k")
	fill(t, c, "k", "v2", tok, time.Minute)
	wantValue(t, "after refill", c, "k", "v2")
}

func testInvalidate(t *testing.T, open Open) {
	c := open(t)()
	for _, k := range []string{"a", "b", "c"} {
		_, _, tok := get(t, c, k)
		fill(t, c, k, "v-"+k, tok, time.Minute)
	}
	invalidate(t, c, "a", "b")
	wantMissing(t, "invalidated a", c, "a")
	wantMissing(t, "invalidated b", c, "b")
	wantValue(t, "untouched c", c, "c", "v-c")

	// A read begun after the invalidation fills as usual.
	_, _, tok := get(t, c, "a")
	fill(t, c, "a", "v-a2", tok, time.Minute)
	wantValue(t, "fill after the invalidation", c, "a", "v-a2")
}

func testTTL(t *testing.T, open Open) {
	const ttl = 100 * time.Millisecond
	c := open(t)()
	_, _, tok := get(t, c, "k")
	fill(t, c, "k", "v", tok, ttl)
	wantValue(t, "within the ttl", c, "k", "v")
	time.Sleep(ttl + 150*time.Millisecond)
	wantMissing(t, "after the ttl", c, "k")
}

func testFillRefusedAfterInvalidate(t *testing.T, open Open) {
	c := open(t)()
	_, _, tok := get(t, c, "k")
	invalidate(t, c, "k")
	fill(t, c, "k", "stale", tok, time.Minute)
	wantMissing(t, "fill with a token from before the invalidation", c, "k")

	// The same with a value cached before: the refused fill must not
	// bring anything back either.
	_, _, tok = get(t, c, "k")
	fill(t, c, "k", "v1", tok, time.Minute)
	_, _, tok = get(t, c, "k")
	invalidate(t, c, "k")
	fill(t, c, "k", "stale", tok, time.Minute)
	wantMissing(t, "refill with a token from before the invalidation", c, "k")
}

// A writer takes the tokens of the keys it is about to create, commits,
// and fills them; another process's invalidation of one of them in between
// (a later commit) refuses that entry, and only the entries whose version
// it moved: a cache may keep one version for several keys.
func testTokensGuardFills(t *testing.T, open Open) {
	ctx := context.Background()
	handle := open(t)
	writer, other := handle(), handle()
	keys := []string{"b", "a", "c", "d", "e", "f", "g", "h"}
	tokens, err := writer.Tokens(ctx, keys...)
	if err != nil {
		t.Fatalf("Tokens(%q): %v", keys, err)
	}
	if len(tokens) != len(keys) {
		t.Fatalf("Tokens(%q) = %v, want %d tokens", keys, tokens, len(keys))
	}
	for i, k := range keys {
		if _, _, tok := get(t, writer, k); tok != tokens[i] {
			t.Errorf("Tokens gave %q %d, Get gives %d; want the same", k, tokens[i], tok)
		}
	}
	invalidate(t, other, "b")
	after, err := writer.Tokens(ctx, keys...)
	if err != nil {
		t.Fatalf("Tokens(%q) after the invalidation: %v", keys, err)
	}
	if after[0] == tokens[0] {
		t.Fatalf("the version of b did not move when it was invalidated (%d)", after[0])
	}
	entries := make([]cache.Entry, len(keys))
	for i, k := range keys {
		entries[i] = cache.Entry{Key: k, Val: []byte("v-" + k), Token: tokens[i]}
	}
	if err := writer.Fill(ctx, time.Minute, entries...); err != nil {
		t.Fatalf("Fill: %v", err)
	}
	filled := 0
	for i, k := range keys {
		if after[i] != tokens[i] {
			wantMissing(t, "invalidated after its token", other, k)
			continue
		}
		wantValue(t, "filled with its token", other, k, "v-"+k)
		filled++
	}
	if filled == 0 {
		t.Fatalf("no entry was filled: every key's version moved with b's")
	}

	// Taking tokens leaves the values alone.
	k := keys[len(keys)-1]
	if _, err := writer.Tokens(ctx, k); err != nil {
		t.Fatalf("Tokens(%q): %v", k, err)
	}
	if after[len(keys)-1] == tokens[len(keys)-1] {
		wantValue(t, "after Tokens", writer, k, "v-"+k)
	}
}

// No keys, no entries, no ttl: no error, nothing stored.
func testNothingToDo(t *testing.T, open Open) {
	ctx := context.Background()
	c := open(t)()
	if tokens, err := c.Tokens(ctx); err != nil || len(tokens) != 0 {
		t.Errorf("Tokens() = %v, %v; want none, no error", tokens, err)
	}
	if err := c.Fill(ctx, time.Minute); err != nil {
		t.Errorf("Fill() = %v, want no error", err)
	}
	tokens, err := c.Tokens(ctx, "k")
	if err != nil {
		t.Fatalf("Tokens(k): %v", err)
	}
	if err := c.Fill(ctx, 0, cache.Entry{Key: "k", Val: []byte("v"), Token: tokens[0]}); err != nil {
		t.Errorf("Fill with no ttl = %v, want no error", err)
	}
	wantMissing(t, "after empty calls and a fill with no ttl", c, "k")
}

func testInvalidationSeenByPeer(t *testing.T, open Open) {
	handle := open(t)
	a, b := handle(), handle()
	_, _, tok := get(t, a, "k")
	fill(t, a, "k", "v", tok, time.Minute)
	wantValue(t, "peer reads the fill", b, "k", "v")
	invalidate(t, b, "k")
	wantMissing(t, "after the peer's invalidation", a, "k")
}

// row is the database of the cross-process test: one value.
type row struct {
	mu  sync.Mutex
	val string
}

func (r *row) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.val
}

func (r *row) set(v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.val = v
}

// Two processes share the cache. Reader A loads the old row and stalls;
// B commits a new row and invalidates; then A fills. A's fill must be
// refused, and the next read, in either process, must return the new row.
func testSlowReaderInOtherProcess(t *testing.T, open Open) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	handle := open(t)
	procA := cache.NewReadThrough[string](handle(), time.Hour, log)
	procB := cache.NewReadThrough[string](handle(), time.Hour, log)
	db := &row{val: "old"}
	load := func(context.Context) (string, error) { return db.get(), nil }

	loaded, resume := make(chan struct{}), make(chan struct{})
	slowLoad := func(context.Context) (string, error) {
		v := db.get()
		close(loaded)
		<-resume
		return v, nil
	}
	got := make(chan string, 1)
	go func() {
		v, err := procA.Get(ctx, "k", slowLoad)
		if err != nil {
			t.Errorf("A's slow Get: %v", err)
		}
		got <- v
	}()
	<-loaded // A holds the old row

	db.set("new") // B's commit
	procB.Invalidate(ctx, []string{"k"})
	close(resume)
	if v := <-got; v != "old" {
		t.Fatalf("A's slow read returned %q, want the %q it loaded", v, "old")
	}

	for name, p := range map[string]*cache.ReadThrough[string]{"A": procA, "B": procB} {
		if v, err := p.Get(ctx, "k", load); err != nil || v != "new" {
			t.Errorf("read in %s after B's commit: %q, %v; want %q: A's stale fill was stored", name, v, err, "new")
		}
	}
}
