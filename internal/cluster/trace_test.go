package cluster_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/telemetry/telemetrytest"
)

// clusterHops are the spans of a confirmed order, each as "service: span
// <- parent span" (the parent "" for the span under the client's).
var clusterHops = []string{
	"converge-lb: lb POST <- ",
	"converge-gateway: gateway POST /api/v1/orders <- lb POST",
	"converge-order: order POST /api/v1/orders <- gateway POST /api/v1/orders",
	"converge-order: order DB A transaction <- order POST /api/v1/orders",
	"converge-order: order cache A write <- order POST /api/v1/orders",
	"converge-order: order outbox relay <- order POST /api/v1/orders",
	"converge-order: order broker publish orders.created <- order outbox relay",
	"converge-inventory: inventory process orders.created <- order broker publish orders.created",
	"converge-inventory: inventory DB B transaction <- inventory process orders.created",
	"converge-inventory: inventory cache B invalidate <- inventory process orders.created",
	"converge-inventory: inventory outbox relay <- inventory process orders.created",
	"converge-inventory: inventory broker publish inventory.reserved <- inventory outbox relay",
	"converge-order: order process inventory.reserved <- inventory broker publish inventory.reserved",
	"converge-order: order DB A transaction <- order process inventory.reserved",
	"converge-order: order cache A write <- order process inventory.reserved",
}

// testTraces places orders as a client that traces itself and checks that
// each order's spans, exported by every process over OTLP, make one trace
// with a span for every hop under the right parent.
func testTraces(t *testing.T, e *env, rcv *telemetrytest.Receiver) {
	e.setStock("TRACE", 10)
	var ids, traces []string
	for range 3 {
		raw := make([]byte, 16)
		rand.Read(raw)
		traceID := hex.EncodeToString(raw)
		req, _ := http.NewRequest("POST", e.c.LBURL+"/api/v1/orders", bytes.NewReader([]byte(`{"customer_id":"c-trace","items":[{"sku":"TRACE","quantity":1}]}`)))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01") // sampled
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var o orderView
		if resp.StatusCode != http.StatusAccepted || json.Unmarshal(body, &o) != nil {
			t.Fatalf("POST order: %s %s", resp.Status, body)
		}
		ids, traces = append(ids, o.ID), append(traces, traceID)
	}
	e.wait()
	for id, o := range e.finals(ids) {
		if o.Status != "CONFIRMED" {
			t.Fatalf("order %s: %s, want CONFIRMED", id, o.Status)
		}
	}
	// Spans leave each process in batches, every 100 ms.
	deadline := time.Now().Add(30 * time.Second)
	for i, traceID := range traces {
		var got []string
		for {
			got = hopsOf(rcv.Spans(), traceID)
			if slices.Equal(got, sorted(clusterHops)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !slices.Equal(got, sorted(clusterHops)) {
			t.Errorf("order %s, trace %s:\n got %s\nwant %s", ids[i], traceID, strings.Join(got, "\n     "), strings.Join(sorted(clusterHops), "\n     "))
		}
	}
}

// hopsOf describes the spans of one trace as clusterHops does, sorted.
func hopsOf(all []telemetrytest.Span, traceID string) []string {
	names := map[string]string{}
	var spans []telemetrytest.Span
	for _, s := range all {
		if s.TraceID == traceID {
			spans = append(spans, s)
			names[s.SpanID] = s.Name
		}
	}
	var out []string
	for _, s := range spans {
		out = append(out, fmt.Sprintf("%s: %s <- %s", s.Service, s.Name, names[s.Parent]))
	}
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
