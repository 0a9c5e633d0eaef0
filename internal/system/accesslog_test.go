package system_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer keeps what many goroutines log, as JSON lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// requests returns the access log lines of request id.
func (l *logBuffer) requests(t *testing.T, id string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		if !strings.Contains(line, `"msg":"http request"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["request_id"] == id {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLog: a request through the load balancer is logged once by
// each role it passes, at info, with its request id and trace id; with
// the access log off, by none.
func TestAccessLog(t *testing.T) {
	for _, on := range []bool{true, false} {
		var logs logBuffer
		cfg := testConfig(t.TempDir())
		cfg.AccessLog = on
		sys := startEmbedded(t, cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
		c := newClient(t, sys)
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		r := c.do("GET", "/api/v1/orders/no-such-order", nil, "X-Request-ID", "req-access-log", "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		if r.Status != http.StatusNotFound {
			t.Fatalf("GET unknown order: %d %s", r.Status, r.Body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := sys.Shutdown(ctx); err != nil { // every line is written by then
			t.Errorf("shutdown: %v", err)
		}
		cancel()
		lines := logs.requests(t, "req-access-log")
		if !on {
			if len(lines) != 0 {
				t.Errorf("access log off, yet: %v", lines)
			}
			continue
		}
		roles := map[string]map[string]any{}
		for _, l := range lines {
			roles[l["role"].(string)] = l
		}
		if len(lines) != 3 || len(roles) != 3 {
			t.Fatalf("access log lines of the request: %v, want one each from lb, gateway and order", lines)
		}
		for _, role := range []string{"lb", "gateway", "order"} {
			l := roles[role]
			if l == nil || l["level"] != "INFO" || l["method"] != "GET" || l["path"] != "/api/v1/orders/no-such-order" ||
				l["status"] != float64(http.StatusNotFound) || l["trace_id"] != traceID || l["duration"] == nil {
				t.Errorf("%s access log line: %v", role, l)
			}
		}
		if got := roles["order"]["route"]; got != "GET /api/v1/orders/{id}" {
			t.Errorf("order's route %v, want GET /api/v1/orders/{id}", got)
		}
	}
}
