package cache_test

import (
	"context"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
)

func TestOpenMemory(t *testing.T) {
	for _, u := range []string{"", "memory"} {
		c, closer, err := cache.Open(context.Background(), u, "p:", 10)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if _, ok := c.(*cache.Memory); !ok {
			t.Errorf("Open(%q) = %T, want *cache.Memory", u, c)
		}
		if err := closer.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestOpenRejectsOtherURLs(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, u := range []string{
		"memcached://127.0.0.1:11211",
		"127.0.0.1:6379",
		"user:" + secret + "@127.0.0.1:6379",
		"redis://user:" + secret + "@127.0.0.1:6379/x",
	} {
		_, _, err := cache.Open(context.Background(), u, "p:", 10)
		if err == nil {
			t.Errorf("Open(%q): no error", u)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open: error %q repeats the password", err)
		}
	}
}

func TestOpenRedis(t *testing.T) {
	u := redistest.URL(t)
	c, closer, err := cache.Open(context.Background(), u, redistest.Prefix(t, u), 10)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := closer.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if _, found, _, err := c.Get(context.Background(), "open-test"); err != nil || found {
		t.Fatalf("Get: found %v, %v; want a miss", found, err)
	}
}

// ParseURL applies Open's rules without opening anything: no server is
// contacted for a Redis URL.
func TestParseURL(t *testing.T) {
	for url, ok := range map[string]bool{
		"memory": true, "": true, "redis://127.0.0.1:1/0": true, "rediss://u:p@h:6379/2": true,
		"redis://h:6379/notadb": false, "memcached://h": false, "h:6379": false,
	} {
		if err := cache.ParseURL(url); (err == nil) != ok {
			t.Errorf("ParseURL(%q) = %v, want ok=%v", url, err, ok)
		}
	}
}
