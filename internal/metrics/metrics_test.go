package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/metrics"
	"github.com/convergehq/converge/internal/metrics/metricstest"
	"github.com/convergehq/converge/internal/web"
)

// serve runs h, wrapped as a role wraps its handler, on a real server.
func serve(t *testing.T, reg *metrics.Registry, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(metrics.NewHTTP(reg).Wrap(reg.Serve(h, nil)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func request(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type copyKey struct{}

// Requests are labelled by the pattern that took them, never by the path a
// client chose, and by a method from a fixed set.
func TestHTTPLabelsAreBounded(t *testing.T) {
	reg := metrics.New("test")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	// A handler that copies the request, as the gateway's request id does.
	copying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		web.Handler(mux).ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), copyKey{}, 1)))
	})
	url := serve(t, reg, copying)

	for _, path := range []string{"/things/1", "/things/2", "/things/3"} {
		if got := request(t, "GET", url+path); got != http.StatusTeapot {
			t.Fatalf("GET %s: %d", path, got)
		}
	}
	request(t, "GET", url+"/nothing/here")
	request(t, "BREW", url+"/things/1")
	if got := request(t, "POST", url+"/metrics"); got != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", got)
	}

	f := metricstest.Scrape(t, url+"/metrics")
	const name = "converge_http_request_duration_seconds"
	for _, w := range []struct {
		match []string
		want  float64
	}{
		{[]string{"route", "GET /things/{id}", "method", "GET", "status", "418", "role", "test"}, 3},
		{[]string{"route", "unmatched", "method", "GET", "status", "404"}, 1},
		{[]string{"route", "unmatched", "method", "other", "status", "405"}, 1},
		{[]string{"route", "/metrics", "method", "POST", "status", "405"}, 1},
	} {
		if got := f.Sum(name+"_count", w.match...); got != w.want {
			t.Errorf("%s_count%v = %v, want %v", name, w.match, got, w.want)
		}
	}
	if got := f.Series(name); got != 4 {
		t.Errorf("%d series of %s, want 4", got, name)
	}
}

// A request is counted in flight while it is served, a held one too, and
// no longer once answered.
func TestRequestsInFlight(t *testing.T) {
	reg := metrics.New("test")
	held, release := make(chan struct{}), make(chan struct{})
	url := serve(t, reg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(held)
		<-release
	}))
	const name = "converge_http_requests_in_flight"
	if got := metricstest.Scrape(t, url+"/metrics").Sum(name); got != 1 {
		t.Errorf("%s = %v with nothing held, want 1 (the scrape)", name, got)
	}
	answered := make(chan error, 1)
	go func() {
		resp, err := http.Get(url + "/wait")
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	<-held
	if got := metricstest.Scrape(t, url+"/metrics").Sum(name); got != 2 {
		t.Errorf("%s = %v with a request held, want 2 (it and the scrape)", name, got)
	}
	close(release)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Scrape(t, url+"/metrics").Sum(name); got != 1 {
		t.Errorf("%s = %v once answered, want 1 (the scrape)", name, got)
	}
}

// A figure that cannot be read is left out of the scrape; the others are
// still served.
func TestFailingCollectorLeavesTheRest(t *testing.T) {
	reg := metrics.New("test")
	metrics.Outbox(reg, func(context.Context) (int64, time.Time, error) { return 0, time.Time{}, errors.New("database down") })
	observe := metrics.Relay(reg)
	observe(3, nil)
	url := serve(t, reg, http.NotFoundHandler())

	f := metricstest.Scrape(t, url+"/metrics")
	if f.Has("converge_outbox_backlog_events") {
		t.Error("the backlog is served although it could not be read")
	}
	if got := f.Sum("converge_relay_published_events_total"); got != 3 {
		t.Errorf("converge_relay_published_events_total = %v, want 3", got)
	}
}

// A count that scans is asked again only once its answer is older than
// reuse; one that fails is asked again at the next scrape.
func TestCountsAreReused(t *testing.T) {
	reg := metrics.New("test")
	var asked atomic.Int64
	metrics.Counts(reg, "converge_things", "Things.", "kind", time.Hour, func(context.Context) (map[string]int64, error) {
		if asked.Add(1) == 1 {
			return nil, errors.New("not yet")
		}
		return map[string]int64{"big": 2, "small": 5}, nil
	})
	url := serve(t, reg, http.NotFoundHandler())
	if metricstest.Scrape(t, url+"/metrics").Has("converge_things") {
		t.Error("a failed count was served")
	}
	for range 3 {
		f := metricstest.Scrape(t, url+"/metrics")
		if got := f.Sum("converge_things", "kind", "small"); got != 5 {
			t.Errorf("converge_things{kind=small} = %v, want 5", got)
		}
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("counted %d times for 4 scrapes, want 2 (the failure, then one answer reused)", n)
	}
}

// The process and Go runtime collectors come with every registry, and
// every metric carries the role.
func TestRegistryHasRuntimeAndRole(t *testing.T) {
	url := serve(t, metrics.New("lb"), http.NotFoundHandler())
	f := metricstest.Scrape(t, url+"/metrics")
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if f.Series(name, "role", "lb") != 1 {
			t.Errorf("%s with role=lb: %d series, want 1", name, f.Series(name, "role", "lb"))
		}
	}
	for name := range f {
		if strings.HasPrefix(name, "promhttp_") {
			t.Errorf("%s served: the handler must not register in a global registry", name)
		}
	}
}

// failingWrites is a cache whose calls of the write path fail.
type failingWrites struct{ *cache.Memory }

var errCacheDown = errors.New("cache down")

func (failingWrites) Tokens(context.Context, ...string) ([]uint64, error) { return nil, errCacheDown }
func (failingWrites) Fill(context.Context, time.Duration, ...cache.Entry) error {
	return errCacheDown
}
func (failingWrites) Invalidate(context.Context, ...string) error { return errCacheDown }

// A cache's lookups are counted by result, and the failures of its write
// path by call; a call that succeeds counts no failure.
func TestCacheCounts(t *testing.T) {
	ctx := context.Background()
	reg := metrics.New("test")
	mem := cache.NewMemory(10)
	ok := metrics.Cache(reg, mem, "memory")
	_, _, tok, _ := ok.Get(ctx, "k") // a miss
	if err := ok.Fill(ctx, time.Minute, cache.Entry{Key: "k", Val: []byte("v"), Token: tok}); err != nil {
		t.Fatal(err)
	}
	ok.Get(ctx, "k") // a hit
	if _, err := ok.Tokens(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if err := ok.Invalidate(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	failing := metrics.Cache(reg, failingWrites{mem}, "redis")
	failing.Tokens(ctx, "n")
	failing.Fill(ctx, time.Minute, cache.Entry{Key: "n"})
	failing.Fill(ctx, time.Minute, cache.Entry{Key: "n"})
	failing.Invalidate(ctx, "n")

	f := metricstest.Scrape(t, serve(t, reg, http.NotFoundHandler())+"/metrics")
	if n := f.Series("converge_cache_write_errors_total", "cache", "memory"); n != 3 {
		t.Errorf("converge_cache_write_errors_total has %d series for the memory cache, want 3 (tokens, fill, invalidate) from the start", n)
	}
	for _, c := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"converge_cache_lookups_total", []string{"cache", "memory", "result", "hit"}, 1},
		{"converge_cache_lookups_total", []string{"cache", "memory", "result", "miss"}, 1},
		{"converge_cache_write_errors_total", []string{"cache", "memory"}, 0},
		{"converge_cache_write_errors_total", []string{"cache", "redis", "op", "tokens"}, 1},
		{"converge_cache_write_errors_total", []string{"cache", "redis", "op", "fill"}, 2},
		{"converge_cache_write_errors_total", []string{"cache", "redis", "op", "invalidate"}, 1},
	} {
		if got := f.Sum(c.name, c.match...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.match, got, c.want)
		}
	}
}
