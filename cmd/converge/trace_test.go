package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/system"
)

// TestTraceCommand runs `converge trace` against a running system, as a
// user would after placing an order.
func TestTraceCommand(t *testing.T) {
	cfg := system.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.BrokerPort, cfg.APIKey = "127.0.0.1:0", t.TempDir(), 0, "trace-key"
	sys, err := system.Start(context.Background(), cfg, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	client := &http.Client{Timeout: 20 * time.Second}
	call := func(method, path, body string) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, sys.LBURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer trace-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
		}
		return b
	}
	var o struct{ ID string }
	if err := json.Unmarshal(call("POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"sku":"A-1","quantity":1}]}`), &o); err != nil {
		t.Fatal(err)
	}
	call("GET", "/api/v1/orders/"+o.ID+"?wait=10s", "")
	noEnv := func(string) string { return "" }

	// The order is CONFIRMED as the reply is applied, but each relay
	// records its "published" step only once the broker has acknowledged
	// the event, which may be after the consumer applied it: wait, on the
	// JSON form, until every service's step is there.
	want := []string{"order/accepted", "order/committed", "order/published", "inventory/delivered",
		"inventory/reserved", "inventory/reply published", "order/applied"}
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var js strings.Builder
		if err := run(context.Background(), []string{"trace", "--json", o.ID, "--url", sys.LBURL, "--api-key", "trace-key"}, noEnv, &js, io.Discard); err != nil {
			t.Fatalf("trace --json: %v", err)
		}
		var tl struct {
			Steps []struct{ Service, Step string }
		}
		if err := json.Unmarshal([]byte(js.String()), &tl); err != nil {
			t.Fatalf("trace --json: %v: %s", err, js.String())
		}
		have := map[string]bool{}
		for _, st := range tl.Steps {
			have[st.Service+"/"+st.Step] = true
		}
		missing = missing[:0]
		for _, w := range want {
			if !have[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the order's timeline lacks %q after 10s", missing)
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"trace", o.ID, "--url", sys.LBURL, "--api-key", "trace-key"}, noEnv, &out, io.Discard); err != nil {
		t.Fatalf("trace: %v", err)
	}
	text := out.String()
	if !strings.HasPrefix(text, "order "+o.ID+"  CONFIRMED\n") {
		t.Errorf("trace output starts %q, want the order and CONFIRMED", text)
	}
	// Each step on a line of its own, with its service.
	for _, w := range want {
		service, step, _ := strings.Cut(w, "/")
		if !regexp.MustCompile(`(?m)^\s+\S+\s+\+\S+\s+` + service + `\s+` + step + `\s`).MatchString(text) {
			t.Errorf("trace output has no line for %s's step %q:\n%s", service, step, text)
		}
	}

	// Flags first, the key from the environment, and JSON.
	out.Reset()
	env := func(k string) string {
		if k == "CONVERGE_API_KEY" {
			return "trace-key"
		}
		return ""
	}
	if err := run(context.Background(), []string{"trace", "--json", "--url", sys.LBURL, o.ID}, env, &out, io.Discard); err != nil {
		t.Fatalf("trace --json: %v", err)
	}
	var tl struct {
		OrderID string `json:"order_id"`
		Steps   []struct{ Step string }
	}
	if err := json.Unmarshal([]byte(out.String()), &tl); err != nil || tl.OrderID != o.ID || len(tl.Steps) < 7 {
		t.Errorf("trace --json: %v; got %s", err, out.String())
	}

	// An unknown order: one readable line, exit 1. No id: a usage error.
	err = run(context.Background(), []string{"trace", "no-such-order", "--url", sys.LBURL, "--api-key", "trace-key"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "404") || exitCode(err) != 1 {
		t.Errorf("trace of an unknown order: %v (exit %d), want a 404 error, exit 1", err, exitCode(err))
	}
	err = run(context.Background(), []string{"trace", "--url", sys.LBURL}, noEnv, io.Discard, io.Discard)
	var u usageError
	if !errors.As(err, &u) {
		t.Errorf("trace without an order id: %v, want a usage error", err)
	}
	err = run(context.Background(), []string{"trace", o.ID, "--url", sys.LBURL, o.ID}, noEnv, io.Discard, io.Discard)
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "one order id") {
		t.Errorf("trace with two order ids: %v, want a usage error", err)
	}
	err = run(context.Background(), []string{"trace", o.ID, "--url", sys.LBURL, "--api-key", "wrong"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("trace with a wrong key: %v, want a 401 error", err)
	}
}
