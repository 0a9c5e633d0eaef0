package bench_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/convergehq/converge/internal/bench"
	"github.com/convergehq/converge/internal/load"
)

// TestStubServesTheLoad drives Stub directly with the load client and a
// mix of every path it takes (unknown SKUs, cancels): every order must be
// accepted and seen final, without an error.
func TestStubServesTheLoad(t *testing.T) {
	srv := httptest.NewServer(bench.Stub())
	t.Cleanup(srv.Close)
	cfg := load.DefaultConfig()
	cfg.URL, cfg.APIKey, cfg.Orders, cfg.Concurrency = srv.URL, "k", 300, 8
	cfg.CancelRatio, cfg.UnknownSKURatio = 0.2, 0.1
	rep, err := load.Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("load.Run against the stub: %v", err)
	}
	if rep.Accepted != 300 || rep.Converged != 300 || rep.Failed() != 0 || rep.Pending() != 0 {
		t.Errorf("accepted %d, converged %d, failed %d, pending %d; want 300, 300, 0, 0", rep.Accepted, rep.Converged, rep.Failed(), rep.Pending())
	}
}
