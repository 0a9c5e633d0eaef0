package system_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/telemetry"
)

// hop is a span an order's trace must hold: its name and its parent's
// ("" for the root).
type hop struct{ name, parent string }

// confirmedHops are the spans of an order placed through the load balancer
// and confirmed: every hop of its way, one trace.
var confirmedHops = []hop{
	{"lb POST", ""},
	{"gateway POST /api/v1/orders", "lb POST"},
	{"order POST /api/v1/orders", "gateway POST /api/v1/orders"},
	{"order DB A transaction", "order POST /api/v1/orders"},
	{"order cache A write", "order POST /api/v1/orders"},
	{"order outbox relay", "order POST /api/v1/orders"},
	{"order broker publish orders.created", "order outbox relay"},
	{"inventory process orders.created", "order broker publish orders.created"},
	{"inventory DB B transaction", "inventory process orders.created"},
	{"inventory cache B invalidate", "inventory process orders.created"},
	{"inventory outbox relay", "inventory process orders.created"},
	{"inventory broker publish inventory.reserved", "inventory outbox relay"},
	{"order process inventory.reserved", "inventory broker publish inventory.reserved"},
	{"order DB A transaction", "order process inventory.reserved"},
	{"order cache A write", "order process inventory.reserved"},
}

// TestOneTracePerOrder places orders through the load balancer of a system
// whose roles export to an in-memory exporter, and checks that each
// order's trace has a span for every hop, under the right parent.
func TestOneTracePerOrder(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := testConfig(t.TempDir())
	cfg.Tracing = telemetry.Tracing{Provider: tp}
	sys := startEmbedded(t, cfg, brokertest.Logger(t))
	c := newClient(t, sys)
	c.setStock("T-1", 10)

	// The first order comes from a client that traces itself: the lb
	// continues its trace. The others start theirs at the lb.
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	var (
		ids    []string
		traces []trace.TraceID
		seen   = map[trace.TraceID]bool{}
	)
	for i := range 3 {
		var headers []string
		if i == 0 {
			headers = []string{"traceparent", "00-" + clientTrace + "-00f067aa0ba902b7-01"}
		}
		r := c.do("POST", "/api/v1/orders", map[string]any{"customer_id": "c-trace", "items": []item{{SKU: "T-1", Quantity: 1}}}, headers...)
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST order: %d %s", r.Status, r.Body)
		}
		var o orderView
		r.decode(t, &o)
		ids = append(ids, o.ID)
		// Orders are placed one at a time: the new POST span is this one's.
		eventually(t, 5*time.Second, "the POST span of order "+o.ID, func() bool {
			for _, s := range exp.GetSpans() {
				if id := s.SpanContext.TraceID(); s.Name == "order POST /api/v1/orders" && !seen[id] {
					seen[id] = true
					traces = append(traces, id)
					return true
				}
			}
			return false
		})
	}
	if got := traces[0].String(); got != clientTrace {
		t.Errorf("first order's trace %s, want the client's %s", got, clientTrace)
	}
	for _, o := range c.finals(ids...) {
		if o.Status != "CONFIRMED" {
			t.Fatalf("order %s: %s, want CONFIRMED", o.ID, o.Status)
		}
	}
	for i, id := range ids {
		// The last spans end just after the order is confirmed.
		until := waitEnd(t, 5*time.Second)
		missing := missingHops(spansOf(exp.GetSpans(), traces[i]), confirmedHops)
		for len(missing) > 0 && time.Now().Before(until) {
			time.Sleep(20 * time.Millisecond)
			missing = missingHops(spansOf(exp.GetSpans(), traces[i]), confirmedHops)
		}
		if len(missing) > 0 {
			t.Errorf("order %s: its trace lacks %s; it has %s", id, strings.Join(missing, ", "), names(spansOf(exp.GetSpans(), traces[i])))
			continue
		}
		if got := spansOf(exp.GetSpans(), traces[i]); len(got) != len(confirmedHops) {
			t.Errorf("order %s: %d spans in its trace, want %d: %s", id, len(got), len(confirmedHops), names(got))
		}
	}
}

func spansOf(all tracetest.SpanStubs, id trace.TraceID) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range all {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// missingHops lists the hops of want that spans lacks, as "name <- parent".
func missingHops(spans tracetest.SpanStubs, want []hop) []string {
	byID := map[trace.SpanID]string{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s.Name
	}
	have := map[hop]int{}
	for _, s := range spans {
		parent := ""
		if s.Parent.IsValid() && !s.Parent.IsRemote() || byID[s.Parent.SpanID()] != "" {
			parent = byID[s.Parent.SpanID()]
			if parent == "" {
				parent = "(unknown " + s.Parent.SpanID().String() + ")"
			}
		}
		have[hop{s.Name, parent}]++
	}
	var missing []string
	for _, h := range want {
		if have[h] == 0 {
			missing = append(missing, fmt.Sprintf("%s <- %q", h.name, h.parent))
			continue
		}
		have[h]--
	}
	return missing
}

func names(spans tracetest.SpanStubs) string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return strings.Join(out, ", ")
}
