package rediscache_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/convergehq/converge/internal/cache/cachetest"
	"github.com/convergehq/converge/internal/cache/rediscache"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
)

func TestContract(t *testing.T) { cachetest.Run(t, redistest.Open) }

// When a key's version expires between a reader's Get and its Fill, the
// fill is refused rather than trusted: an expired version must never let a
// value from before an invalidation in.
func TestExpiredVersionRefusesFill(t *testing.T) {
	url := redistest.URL(t)
	const versionTTL = 50 * time.Millisecond
	c := redistest.New(t, url, rediscache.Options{Prefix: redistest.Prefix(t, url), VersionTTL: versionTTL})
	ctx := context.Background()

	_, _, tok, err := c.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Invalidate(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * versionTTL) // the version written by Invalidate is gone
	if err := c.Fill(ctx, time.Minute, rediscache.Entry{Key: "k", Val: []byte("stale"), Token: tok}); err != nil {
		t.Fatal(err)
	}
	// Another reader's Get re-creates the version; the old token must
	// still not match it.
	if _, found, _, err := c.Get(ctx, "k"); err != nil || found {
		t.Fatalf("Get after a fill on an expired version: found %v, %v; want a miss", found, err)
	}
	if err := c.Fill(ctx, time.Minute, rediscache.Entry{Key: "k", Val: []byte("stale"), Token: tok}); err != nil {
		t.Fatal(err)
	}
	if _, found, _, err := c.Get(ctx, "k"); err != nil || found {
		t.Fatalf("Get after a fill on a re-created version: found %v, %v; want a miss", found, err)
	}
}

// A command ends at its context's deadline when Redis does not answer, not
// at the connection's timeouts (seconds): the order service bounds the one
// call it makes inside a transaction, and a stalled Redis must not hold up
// the commit. The client talks to Redis through a proxy that holds the
// command back for a second; without the deadline the call would wait
// that out and succeed.
func TestCommandEndsAtItsContextDeadline(t *testing.T) {
	url := redistest.URL(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	p := newStallingProxy(t, opts.Addr)
	proxied := strings.Replace(url, opts.Addr, p.addr(), 1)
	c := redistest.New(t, proxied, rediscache.Options{Prefix: redistest.Prefix(t, url)})
	ctx := context.Background()
	if _, err := c.Tokens(ctx, "k"); err != nil { // connected, script loaded
		t.Fatal(err)
	}
	p.stall(time.Second)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if tokens, err := c.Tokens(short, "k"); err == nil {
		t.Fatalf("Tokens through a stalled Redis with a 50 ms deadline = %v, nil; want an error at the deadline", tokens)
	}
	if _, err := c.Tokens(ctx, "k"); err != nil {
		t.Fatalf("Tokens once the stall is over: %v", err)
	}
}

// stallingProxy forwards TCP connections to a Redis, and for a while
// holds back what the clients send.
type stallingProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	resumed chan struct{} // closed when no stall is on
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{ln: ln, resumed: make(chan struct{})}
	close(p.resumed)
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, client, server)
			connsMu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.forward(server, client); _ = server.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(client, server); _ = client.Close() }()
		}
	}()
	return p
}

func (p *stallingProxy) addr() string { return p.ln.Addr().String() }

// stall holds back what clients send for d.
func (p *stallingProxy) stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resumed := make(chan struct{})
	p.resumed = resumed
	time.AfterFunc(d, func() { close(resumed) })
}

// forward copies from src to dst, each read waiting out a stall first.
func (p *stallingProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			resumed := p.resumed
			p.mu.Unlock()
			<-resumed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Purge deletes every key under the cache's prefix, more than one SCAN
// page and one DEL batch of them, and none under another prefix.
func TestPurge(t *testing.T) {
	url := redistest.URL(t)
	ctx := context.Background()
	goneP := redistest.Prefix(t, url)
	gone := redistest.New(t, url, rediscache.Options{Prefix: goneP})
	kept := redistest.New(t, url, rediscache.Options{Prefix: redistest.Prefix(t, url)})
	fill := func(c *rediscache.Cache, key string) {
		t.Helper()
		_, _, tok, err := c.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Fill(ctx, time.Minute, rediscache.Entry{Key: key, Val: []byte("v"), Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1500 {
		fill(gone, fmt.Sprint("k", i))
	}
	fill(kept, "k0")
	if err := gone.Purge(ctx); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if n := redistest.CountKeys(t, url, goneP); n != 0 {
		t.Errorf("%d keys left under the purged prefix, want 0", n)
	}
	for _, key := range []string{"k0", "k1499"} {
		if _, found, _, err := gone.Get(ctx, key); err != nil || found {
			t.Errorf("Get(%s) after Purge: found %v, %v; want a miss", key, found, err)
		}
	}
	if v, found, _, err := kept.Get(ctx, "k0"); err != nil || !found || string(v) != "v" {
		t.Errorf("Get(k0) under another prefix after Purge: %q, found %v, %v; want v", v, found, err)
	}

	// A prefix with glob characters purges its own keys only.
	base := redistest.Prefix(t, url)
	star := redistest.New(t, url, rediscache.Options{Prefix: base + "g*"})
	other := redistest.New(t, url, rediscache.Options{Prefix: base + "gx"})
	fill(star, "k")
	fill(other, "k")
	if err := star.Purge(ctx); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if n := redistest.CountKeys(t, url, base+"gx"); n == 0 {
		t.Errorf("purging prefix %q deleted the keys of prefix %q", base+"g*", base+"gx")
	}
	if err := redistest.New(t, url, rediscache.Options{}).Purge(ctx); err == nil {
		t.Error("Purge of a cache without a prefix (all of the database) = nil error, want a refusal")
	}
}

func TestNewRejectsBadURLWithoutThePassword(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, u := range []string{
		"redis://user:" + secret + "@127.0.0.1:6379/notanumber",
		"redis://user:" + secret + "@127.0.0.1:6379/0/1",
		"redis://user:" + secret + "@[::1:6379/0",
		"http://user:" + secret + "@127.0.0.1:6379/0",
		"redis://user:" + secret + "@127.0.0.1:1/0", // nothing listens on port 1
	} {
		c, err := rediscache.New(context.Background(), u, rediscache.Options{})
		if err == nil {
			c.Close()
			t.Errorf("New(%s): no error", u)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("New: error %q repeats the password", err)
		}
		t.Logf("New: %v", err)
	}
}
