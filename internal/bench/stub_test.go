package bench_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/convergehq/converge/internal/bench"
	"github.com/convergehq/converge/internal/load"
)

// TestStubServesTheLoad drives Stub directly with the load client and a
// mix of every path it takes (unknown SKUs, cancels): every order must be
// accepted and seen final, without an error. With Prefer: wait, as the
// real flow, it answers each order in the POST: no GET follows one; the
// orders drawn to be cancelled are placed without the preference.
func TestStubServesTheLoad(t *testing.T) {
	for _, prefer := range []bool{false, true} {
		t.Run(fmt.Sprintf("prefer-wait=%v", prefer), func(t *testing.T) {
			var gets, prefers atomic.Int64
			stub := bench.Stub()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/orders/") {
					gets.Add(1)
				}
				if r.Method == http.MethodPost && r.URL.Path == "/api/v1/orders" && r.Header.Get("Prefer") != "" {
					prefers.Add(1)
				}
				stub.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			cfg := load.DefaultConfig()
			cfg.URL, cfg.APIKey, cfg.Orders, cfg.Concurrency = srv.URL, "k", 300, 8
			cfg.CancelRatio, cfg.UnknownSKURatio, cfg.PreferWait = 0.2, 0.1, prefer
			rep, err := load.Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatalf("load.Run against the stub: %v", err)
			}
			if rep.Accepted != 300 || rep.Converged != 300 || rep.Failed() != 0 || rep.Pending() != 0 {
				t.Errorf("accepted %d, converged %d, failed %d, pending %d; want 300, 300, 0, 0", rep.Accepted, rep.Converged, rep.Failed(), rep.Pending())
			}
			if want := int64(300 - rep.Cancels); prefer && (rep.Cancels == 0 || prefers.Load() != want) {
				t.Errorf("%d POSTs with Prefer, %d cancels; want some cancels and Prefer on every other POST (%d)", prefers.Load(), rep.Cancels, want)
			}
			if n := gets.Load(); prefer && n != 0 {
				t.Errorf("%d GETs of orders with Prefer: wait, want 0: the stub must answer in the POST", n)
			} else if !prefer && n < 100 {
				t.Errorf("%d GETs of orders without Prefer: wait, want one per order not cancelled (about 240)", n)
			}
		})
	}
}
