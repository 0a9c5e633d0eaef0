package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProbe checks the container health check: 2xx passes, any other
// status or a closed port fails with exit code 1, a bad URL is a usage
// error (2).
func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			http.Error(w, "database down", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		url  string
		code int
		want string
	}{
		{srv.URL + "/healthz", 0, ""},
		{"tcp://" + strings.TrimPrefix(srv.URL, "http://"), 0, ""},
		{srv.URL + "/readyz", 1, "503 Service Unavailable"},
		{"tcp://" + closedAddr, 1, "probe:"},
		{"http://" + closedAddr + "/healthz", 1, "probe:"},
		{"", 2, "want http://host:port/path or tcp://host:port"},
		{"ftp://" + closedAddr, 2, "want an http, https or tcp URL"},
	}
	for _, tt := range tests {
		err := run(context.Background(), []string{"probe", "--url", tt.url, "--timeout", "5s"}, func(string) string { return "" }, io.Discard, io.Discard)
		if got := report(io.Discard, err); got != tt.code {
			t.Errorf("probe %q: exit code %d (%v), want %d", tt.url, got, err, tt.code)
			continue
		}
		if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("probe %q: error %q, want it to contain %q", tt.url, err, tt.want)
		}
	}
}
