package load_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/check"
	"github.com/convergehq/converge/internal/load"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/system"
)

// TestRunAgainstTheSystem drives a whole embedded system in the open model
// with a mix of unknown SKUs and cancels, and holds the report to what the
// system did: every path taken, server times inside the client's window,
// progress counted, files written, invariants kept.
func TestRunAgainstTheSystem(t *testing.T) {
	dir := t.TempDir()
	scfg := system.DefaultConfig()
	scfg.Addr, scfg.DataDir, scfg.APIKey, scfg.Seed, scfg.BrokerPort = "127.0.0.1:0", dir, "load-key", false, 0
	sys, err := system.Start(t.Context(), scfg, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("start system: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)

	cfg := load.DefaultConfig()
	cfg.URL, cfg.APIKey = sys.LBURL, "load-key"
	// Gentle enough for a busy machine under -race: the load balancer takes
	// gateways whose health checks time out out of rotation.
	cfg.Rate, cfg.Duration, cfg.Orders = 100, 1500*time.Millisecond, load.MaxOrders
	const want = 150 // 100/s for 1.5 s
	cfg.CancelRatio, cfg.UnknownSKURatio = 0.2, 0.15
	cfg.SKUs, cfg.Items, cfg.Concurrency, cfg.Stock = 4, 2, 16, 100
	cfg.Timeout, cfg.Seed = 60*time.Second, 7
	var progress []load.Progress
	cfg.OnProgress = func(p load.Progress) { progress = append(progress, p) }

	rep, err := load.Run(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text strings.Builder
	if err := rep.Print(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())

	if rep.Planned != want || rep.Sent != want || rep.Accepted != want || rep.Converged != want || len(rep.Orders) != want {
		t.Fatalf("planned %d, sent %d, accepted %d, converged %d, figures %d; want %d each",
			rep.Planned, rep.Sent, rep.Accepted, rep.Converged, len(rep.Orders), want)
	}
	var unknownRejected, unknownCancelled, cancelled, decided int
	for _, o := range rep.Orders {
		switch {
		case o.UnknownSKU && o.Status == "REJECTED":
			unknownRejected++
			if o.Reason != "unknown_sku" {
				t.Errorf("order %d names an unknown SKU and was rejected for %q, want unknown_sku", o.N, o.Reason)
			}
		case o.UnknownSKU && o.Status == "CANCELLED":
			unknownCancelled++
		case o.UnknownSKU:
			t.Errorf("order %d names an unknown SKU and ended %s", o.N, o.Status)
		}
		if o.Status == "CANCELLED" {
			cancelled++
			if !o.Cancel {
				t.Errorf("order %d was cancelled but not chosen to be", o.N)
			}
		}
		if o.Status == "CONFIRMED" || o.Status == "REJECTED" {
			decided++
			// The order service's times lie inside the client's window:
			// created after the POST was sent, final before it was seen.
			if o.ToFinal <= 0 || o.ToFinal > o.SeenFinal || o.UpdatedAt.Sub(o.CreatedAt) != o.ToFinal {
				t.Errorf("order %d: order->final %v by the server, seen after %v by the client", o.N, o.ToFinal, o.SeenFinal)
			}
		}
	}
	if rep.UnknownSKU == 0 || unknownRejected+unknownCancelled != rep.UnknownSKU || rep.Reasons["unknown_sku"] != unknownRejected {
		t.Errorf("unknown SKU orders %d: %d rejected, %d cancelled; reasons %v", rep.UnknownSKU, unknownRejected, unknownCancelled, rep.Reasons)
	}
	if cancelled == 0 || rep.Cancels < cancelled || rep.Outcome["CANCELLED"] != cancelled {
		t.Errorf("cancelled %d, cancels sent %d, outcome %v", cancelled, rep.Cancels, rep.Outcome)
	}
	if rep.ToFinal.N != decided || rep.SeenFinal.N != decided || rep.ToFinal.P999 > rep.ToFinal.Max || rep.ToFinal.P50 <= 0 {
		t.Errorf("order->final %+v over %d decided orders", rep.ToFinal, decided)
	}
	if len(progress) < 5 {
		t.Fatalf("%d progress calls in a 1.5 s run, want one every 200 ms", len(progress))
	}
	if last := progress[len(progress)-1]; last.Sent != want || last.Accepted != want || last.Final != want || last.Errors != 0 {
		t.Errorf("last progress %+v, want %d sent, accepted and final, no errors", last, want)
	}

	out := filepath.Join(t.TempDir(), "out")
	if err := rep.WriteFiles(out); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	var saved load.Report
	readJSON(t, filepath.Join(out, load.FileJSON), &saved)
	if len(saved.Orders) != want || saved.ToFinal != rep.ToFinal || saved.Orders[0].ID != rep.Orders[0].ID {
		t.Errorf("%s: %d orders, order->final %+v; want what Run returned", load.FileJSON, len(saved.Orders), saved.ToFinal)
	}
	if n := svgElements(t, filepath.Join(out, load.FileLatency), "circle"); n != rep.Accepted+decided {
		t.Errorf("%s has %d points, want one per 202 and per order->final: %d", load.FileLatency, n, rep.Accepted+decided)
	}
	if n := svgElements(t, filepath.Join(out, load.FileHistogram), "path"); n < 2 {
		t.Errorf("%s has %d paths, want at least the two series", load.FileHistogram, n)
	}
	page, err := os.ReadFile(filepath.Join(out, load.FileHTML))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(page), "<svg") != 2 || !strings.Contains(string(page), "order-&gt;final") {
		t.Errorf("%s does not embed both pictures and the report", load.FileHTML)
	}

	checkInvariants(t, dir, 10*time.Second) // while it runs: the last events settle
	stop()
	checkInvariants(t, dir, 0) // and the shutdown left them so
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// svgElements parses an SVG file as XML and counts its elements of name.
func svgElements(t *testing.T, path, name string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	n := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == name {
			n++
		}
	}
}

// checkInvariants runs converge check's invariants over the system's
// databases in dir until all hold or wait has passed, and reports those
// that do not.
func checkInvariants(t *testing.T, dir string, wait time.Duration) {
	t.Helper()
	ctx := context.Background()
	orders, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "order.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	inv, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "inventory.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	// An order is final for the client before the last events of a cancel
	// (inventory's release, and its reply applied) have gone through.
	results, err := check.Settle(ctx, orders, inv, wait)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range check.Failed(results) {
		t.Errorf("invariant failed (checked for %s): %s: %s", wait, r.Name, r.Detail)
	}
}
