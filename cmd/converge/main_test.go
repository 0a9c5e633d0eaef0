package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDevRunsAndStops runs `converge dev` as a user would (free ports, a
// fresh data directory), sends an order through the printed curl target,
// checks the invariants with `converge check`, and stops it with a cancel,
// as Ctrl-C does.
func TestDevRunsAndStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--addr", "127.0.0.1:0", "--broker-port", "0", "--data", dir, "--log-level", "warn"},
			func(string) string { return "" }, w, io.Discard)
		w.Close()
	}()

	var lbURL, key string
	lines := bufio.NewScanner(out)
	for lines.Scan() && (lbURL == "" || key == "") {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 3 && f[0] == "load" && f[1] == "balancer":
			lbURL = f[2]
		case len(f) == 3 && f[0] == "API" && f[1] == "key":
			key = f[2]
		}
	}
	if lbURL == "" || key == "" {
		t.Fatalf("dev printed no load balancer URL or API key (got %q, %q)", lbURL, key)
	}
	go io.Copy(io.Discard, out)

	// The demo catalogue is seeded on first start.
	req, _ := http.NewRequest("POST", lbURL+"/api/v1/orders",
		strings.NewReader(`{"customer_id":"c-1","items":[{"sku":"A-1","quantity":2}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST order: status %d, want 202", resp.StatusCode)
	}
	client.CloseIdleConnections()

	var report strings.Builder
	if err := run(ctx, []string{"check", "--data", dir, "--wait", "20s"}, func(string) string { return "" }, &report, io.Discard); err != nil {
		t.Fatalf("check: %v\n%s", err, report.String())
	}
	if !strings.Contains(report.String(), "OK   no order is PENDING") || strings.Contains(report.String(), "FAIL") {
		t.Fatalf("check report:\n%s", report.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev returned %v after the cancel, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of the cancel")
	}
}

func TestUsageErrors(t *testing.T) {
	env := func(k string) string {
		if k == "CONVERGE_GATEWAYS" {
			return "many"
		}
		return ""
	}
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"no command", nil, nil, "no command given"},
		{"unknown command", []string{"fly"}, nil, `unknown command "fly"`},
		{"unknown flag", []string{"dev", "--nope"}, nil, "flag provided but not defined"},
		{"stray argument", []string{"check", "extra"}, nil, `unexpected argument "extra"`},
		{"bad env twin", []string{"dev"}, env, "CONVERGE_GATEWAYS"},
		{"bad log level", []string{"dev", "--log-level", "loud"}, nil, "log level"},
		{"check without data", []string{"check", "--data", "/nonexistent"}, nil, "no order database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := tt.env
			if getenv == nil {
				getenv = func(string) string { return "" }
			}
			err := run(context.Background(), tt.args, getenv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}
