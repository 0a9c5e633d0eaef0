// Package redistest gives tests a Redis to use: the one CONVERGE_TEST_REDIS_URL
// names, under a key prefix of their own that is emptied when they end.
// Tests are skipped when the variable is not set.
package redistest

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/cache/rediscache"
)

// EnvURL is the environment variable that names the test Redis.
const EnvURL = "CONVERGE_TEST_REDIS_URL"

// URL returns the test Redis's URL, or skips t if EnvURL is not set.
func URL(t testing.TB) string {
	t.Helper()
	u := strings.TrimSpace(os.Getenv(EnvURL))
	if u == "" {
		t.Skip(EnvURL + " is not set; set it (e.g. redis://127.0.0.1:6379/0) to run the Redis tests")
	}
	return u
}

// Prefix returns a key prefix that no other test uses, and deletes every key
// under it from the Redis at url when t ends.
func Prefix(t testing.TB, url string) string {
	t.Helper()
	p := "converge-test:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := rediscache.New(ctx, url, rediscache.Options{Prefix: p})
		if err != nil {
			t.Errorf("redistest cleanup: %v", err)
			return
		}
		defer c.Close()
		if err := c.Purge(ctx); err != nil {
			t.Errorf("redistest cleanup: %v", err)
		}
	})
	return p
}

// Open is a cachetest.Open for the test Redis: it prepares a fresh prefix
// for t, and each handle is a separate client on it, as each process would
// have, closed when t ends.
func Open(t *testing.T) func() cache.Cache {
	t.Helper()
	url := URL(t)
	p := Prefix(t, url)
	return func() cache.Cache { return New(t, url, rediscache.Options{Prefix: p}) }
}

// New returns a client on the Redis at url, closed when t ends.
func New(t testing.TB, url string, opts rediscache.Options) *rediscache.Cache {
	t.Helper()
	c, err := rediscache.New(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("rediscache.New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("rediscache Close: %v", err)
		}
	})
	return c
}

// CountKeys counts the keys of the Redis at url that start with prefix, by
// reading every key name: it does not depend on how a pattern would match
// the prefix.
func CountKeys(t testing.TB, url, prefix string) int {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	keys, err := c.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}
