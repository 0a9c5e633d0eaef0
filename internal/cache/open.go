package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/convergehq/converge/internal/cache/rediscache"
)

// Open returns the cache that rawURL names, and what to close when done:
//
//   - "" or "memory": a Memory of at most maxEntries entries, private to
//     this process;
//   - "redis://[user:password@]host:port/db" or "rediss://...": a Redis
//     cache whose keys all start with prefix; processes that share a prefix
//     share entries and see each other's invalidations.
//
// Anything else is an error. Errors never repeat a password.
func Open(ctx context.Context, rawURL, prefix string, maxEntries int) (Cache, io.Closer, error) {
	redis, err := parseURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	if !redis {
		return NewMemory(maxEntries), nopCloser{}, nil
	}
	c, err := rediscache.New(ctx, rawURL, rediscache.Options{Prefix: prefix})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: open: %w", err)
	}
	return c, c, nil
}

// ParseURL checks rawURL as Open would, without opening anything, so that
// a bad configuration fails before anything starts.
func ParseURL(rawURL string) error {
	_, err := parseURL(rawURL)
	return err
}

// parseURL checks rawURL and reports whether it names Redis.
func parseURL(rawURL string) (redis bool, err error) {
	if rawURL == "" || rawURL == "memory" {
		return false, nil
	}
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return false, errors.New("cache: URL must be memory or start with redis:// or rediss://")
	}
	switch scheme {
	case "redis", "rediss":
		if err := rediscache.ParseURL(rawURL); err != nil {
			return false, fmt.Errorf("cache: %w", err)
		}
		return true, nil
	default:
		return false, fmt.Errorf("cache: unknown URL scheme %q: want memory, redis:// or rediss://", scheme)
	}
}

// The Redis cache satisfies Cache without importing this package.
var _ Cache = (*rediscache.Cache)(nil)

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
