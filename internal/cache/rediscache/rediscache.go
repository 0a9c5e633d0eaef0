// Package rediscache is a cache shared by several processes, kept in Redis,
// with versioned writes: a reader's fill is refused if the key was
// invalidated, by any process, since the reader's Get. It satisfies
// cache.Cache without importing it (the token is a plain uint64), so that
// package cache can open it.
//
// Each cached key k has, under the configured prefix:
//
//	val:k   the value, with the fill's TTL
//	ver:k   the version of k, with Options.VersionTTL
//	gen     a counter shared by all keys, never expiring
//
// Invalidate bumps gen and writes the new number into ver:k of every key it
// drops, so a version is never handed out twice. Get returns ver:k as the
// token, first setting it to the current gen if it is missing; Tokens does
// the same for many keys without reading their values. Fill stores a value
// only if ver:k still holds its token. Each of the four is one Lua script,
// so one atomic round trip, for one key or many.
//
// Why ver:k expires, and why VersionTTL must outlive any read: ver:k cannot
// live forever, or Redis would hold a version for every key ever read. When
// it expires between a reader's Get and its Fill, the Fill finds it missing
// (or re-created by a later Get from the then current gen, which differs
// from the token if any invalidation happened meanwhile) and is refused.
// So expiry can never let a stale value in, but a VersionTTL shorter than
// the slowest reads would keep refusing their fills and those keys would
// never be cached. Keep it well above the longest database read plus
// retries; the default is ten minutes.
//
// gen starts, when missing (a new Redis, or one that lost its data), at the
// server's clock in microseconds rather than at zero, so that the versions
// handed out after a flush do not repeat those of readers still in flight
// from before it.
//
// All keys of one cache are touched together by the scripts, so this is for
// a single Redis server (or a primary with replicas), not Redis Cluster.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultVersionTTL is how long a key's version outlives its last Get or
// Invalidate when Options.VersionTTL is zero.
const DefaultVersionTTL = 10 * time.Minute

// Options tune a Cache.
type Options struct {
	// Prefix starts every Redis key of this cache, so that several caches
	// (or tests) can share one Redis database. Processes that must see
	// each other's invalidations use the same prefix.
	Prefix string
	// VersionTTL is how long a key's version is kept; see the package
	// comment for why it must outlive any read. Zero means
	// DefaultVersionTTL.
	VersionTTL time.Duration
}

// Cache is a Redis-backed cache with versioned writes. It is safe for
// concurrent use; call Close when done.
type Cache struct {
	client     *redis.Client
	prefix     string
	versionTTL time.Duration
	get        *redis.Script
	tokens     *redis.Script
	fill       *redis.Script
	invalidate *redis.Script
}

// seedGen is the part of the scripts that reads gen (KEYS[genKey]),
// creating it from the server's clock if it is missing.
const seedGen = `
local function gen(key)
  local g = redis.call('GET', key)
  if not g then
    local t = redis.call('TIME')
    g = string.format('%s%06d', t[1], tonumber(t[2]))
    redis.call('SET', key, g)
  end
  return g
end
`

// getScript: KEYS = val:k, ver:k, gen; ARGV = version TTL in ms.
// Returns {value or nil, version}.
const getScript = seedGen + `
local val = redis.call('GET', KEYS[1])
local ver = redis.call('GET', KEYS[2])
if not ver then
  ver = gen(KEYS[3])
  redis.call('SET', KEYS[2], ver, 'PX', ARGV[1])
end
return {val, ver}
`

// tokensScript: KEYS = gen, ver:k1, ver:k2...; ARGV = version TTL in ms.
// Returns the version of each key, setting a missing one as getScript does.
const tokensScript = seedGen + `
local out = {}
for i = 2, #KEYS do
  local ver = redis.call('GET', KEYS[i])
  if not ver then
    ver = gen(KEYS[1])
    redis.call('SET', KEYS[i], ver, 'PX', ARGV[1])
  end
  out[#out + 1] = ver
end
return out
`

// fillScript: KEYS = val:k1, ver:k1, val:k2, ver:k2...; ARGV = TTL in ms,
// token1, value1, token2, value2... Stores each value whose key's version
// is still its token; returns how many it stored.
const fillScript = `
local n = 0
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i + 1]) == ARGV[i + 1] then
    redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[1])
    n = n + 1
  end
end
return n
`

// invalidateScript: KEYS = gen, then val:k, ver:k for each key;
// ARGV = version TTL in ms. The new version is read back with GET so that
// it stays a string: Lua numbers are doubles and would be formatted
// lossily.
const invalidateScript = seedGen + `
gen(KEYS[1])
redis.call('INCR', KEYS[1])
local g = redis.call('GET', KEYS[1])
for i = 2, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], g, 'PX', ARGV[1])
end
return g
`

// ParseURL checks rawURL as New would, without connecting, so that a bad
// configuration fails before anything starts.
func ParseURL(rawURL string) error {
	_, _, err := parseURL(rawURL)
	return err
}

func parseURL(rawURL string) (*url.URL, *redis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, nil, fmt.Errorf("rediscache: invalid URL: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, nil, fmt.Errorf("rediscache: invalid URL %s: scheme must be redis or rediss", u.Redacted())
	}
	ro, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("rediscache: invalid URL %s: %w", u.Redacted(), err)
	}
	return u, ro, nil
}

// New connects to the Redis at rawURL (redis://[user:password@]host:port/db,
// or rediss:// for TLS) and checks that it answers. Errors name the URL with
// its password redacted.
func New(ctx context.Context, rawURL string, opts Options) (*Cache, error) {
	u, ro, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.VersionTTL <= 0 {
		opts.VersionTTL = DefaultVersionTTL
	}
	c := &Cache{
		client:     redis.NewClient(withContextTimeouts(ro)),
		prefix:     opts.Prefix,
		versionTTL: opts.VersionTTL,
		get:        redis.NewScript(getScript),
		tokens:     redis.NewScript(tokensScript),
		fill:       redis.NewScript(fillScript),
		invalidate: redis.NewScript(invalidateScript),
	}
	if err := c.client.Ping(ctx).Err(); err != nil {
		_ = c.client.Close()
		return nil, fmt.Errorf("rediscache: connect to %s: %w", u.Redacted(), err)
	}
	return c, nil
}

// withContextTimeouts makes the client's commands end at their context's
// deadline, not only at the connection's read and write timeouts (seconds):
// a caller that bounds a call, as the order service does with the one it
// makes inside a transaction, is not held up by a Redis that stalls. A
// command cut short closes its connection (its answer may still come) and
// may still run on the server; a Redis slower than the deadlines therefore
// costs new connections, and the callers fall back as for a failure.
func withContextTimeouts(ro *redis.Options) *redis.Options {
	ro.ContextTimeoutEnabled = true
	return ro
}

// Close closes the connections to Redis.
func (c *Cache) Close() error {
	if err := c.client.Close(); err != nil {
		return fmt.Errorf("rediscache: close: %w", err)
	}
	return nil
}

// Purge deletes every key of the cache: all keys under its prefix, of
// every process that shares it. For a prefix no process uses any more; a
// cache without a prefix refuses, as it would empty the whole database.
func (c *Cache) Purge(ctx context.Context) error {
	if c.prefix == "" {
		return errors.New("rediscache: purge: the cache has no prefix")
	}
	iter := c.client.Scan(ctx, 0, globEscape(c.prefix)+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := c.client.Del(ctx, batch...).Err()
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("rediscache: purge %s*: %w", c.prefix, err)
		}
		return nil
	}
	for iter.Next(ctx) {
		if !strings.HasPrefix(iter.Val(), c.prefix) {
			continue // the pattern is escaped; this is belt and braces
		}
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("rediscache: purge %s*: %w", c.prefix, err)
	}
	return flush()
}

// globEscape quotes the characters SCAN's MATCH pattern gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (c *Cache) valKey(key string) string { return c.prefix + "val:" + key }
func (c *Cache) verKey(key string) string { return c.prefix + "ver:" + key }
func (c *Cache) genKey() string           { return c.prefix + "gen" }

// millis is d in whole milliseconds, at least 1: PX refuses zero.
func millis(d time.Duration) int64 { return max(1, d.Milliseconds()) }

// Get returns the value under key, if any, and the key's version token.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, bool, uint64, error) {
	res, err := c.get.Run(ctx, c.client, []string{c.valKey(key), c.verKey(key), c.genKey()}, millis(c.versionTTL)).Slice()
	if err != nil {
		return nil, false, 0, fmt.Errorf("rediscache: get %q: %w", key, err)
	}
	if len(res) != 2 {
		return nil, false, 0, fmt.Errorf("rediscache: get %q: script returned %d values, want 2", key, len(res))
	}
	ver, ok := res[1].(string)
	if !ok {
		return nil, false, 0, fmt.Errorf("rediscache: get %q: version is %T, want a string", key, res[1])
	}
	token, err := strconv.ParseUint(ver, 10, 64)
	if err != nil {
		return nil, false, 0, fmt.Errorf("rediscache: get %q: version: %w", key, err)
	}
	switch v := res[0].(type) {
	case nil:
		return nil, false, token, nil
	case string:
		return []byte(v), true, token, nil
	default:
		return nil, false, 0, fmt.Errorf("rediscache: get %q: value is %T, want a string", key, res[0])
	}
}

// Tokens returns the version token of each key, as Get would, without
// reading the values: one round trip for all of them.
func (c *Cache) Tokens(ctx context.Context, keys ...string) ([]uint64, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	rkeys := make([]string, 0, 1+len(keys))
	rkeys = append(rkeys, c.genKey())
	for _, k := range keys {
		rkeys = append(rkeys, c.verKey(k))
	}
	vers, err := c.tokens.Run(ctx, c.client, rkeys, millis(c.versionTTL)).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("rediscache: tokens %q: %w", keys, err)
	}
	if len(vers) != len(keys) {
		return nil, fmt.Errorf("rediscache: tokens %q: script returned %d versions, want %d", keys, len(vers), len(keys))
	}
	tokens := make([]uint64, len(keys))
	for i, v := range vers {
		if tokens[i], err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, fmt.Errorf("rediscache: tokens %q: version: %w", keys[i], err)
		}
	}
	return tokens, nil
}

// Entry is one value to Fill: Val under Key, guarded by Token. It is the
// same type as cache.Entry (both are aliases of this struct type).
type Entry = struct {
	Key   string
	Val   []byte
	Token uint64
}

// Fill stores each entry's value for ttl unless its key was invalidated
// since the Get or Tokens that returned its token: one round trip for all
// of them. A ttl of zero or less stores nothing.
func (c *Cache) Fill(ctx context.Context, ttl time.Duration, entries ...Entry) error {
	if ttl <= 0 || len(entries) == 0 {
		return nil
	}
	rkeys := make([]string, 0, 2*len(entries))
	args := make([]any, 0, 1+2*len(entries))
	args = append(args, millis(ttl))
	for _, e := range entries {
		rkeys = append(rkeys, c.valKey(e.Key), c.verKey(e.Key))
		args = append(args, strconv.FormatUint(e.Token, 10), e.Val)
	}
	if err := c.fill.Run(ctx, c.client, rkeys, args...).Err(); err != nil {
		keys := make([]string, len(entries))
		for i, e := range entries {
			keys[i] = e.Key
		}
		return fmt.Errorf("rediscache: fill %q: %w", keys, err)
	}
	return nil
}

// Invalidate deletes keys and gives each a new version, refusing the fills
// of reads begun before.
func (c *Cache) Invalidate(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	rkeys := make([]string, 0, 1+2*len(keys))
	rkeys = append(rkeys, c.genKey())
	for _, k := range keys {
		rkeys = append(rkeys, c.valKey(k), c.verKey(k))
	}
	if err := c.invalidate.Run(ctx, c.client, rkeys, millis(c.versionTTL)).Err(); err != nil {
		return fmt.Errorf("rediscache: invalidate %q: %w", keys, err)
	}
	return nil
}
