// Package brokertest runs embedded NATS JetStream servers for tests.
//
// Fault tests stop a server with (*broker.Server).Shutdown and bring it
// back with StartWith(t, s.Config()), which reuses the store directory and
// port; Restart does both in one step.
//
// StartCluster runs a JetStream cluster of several embedded servers, for
// tests of replication and failover; its nodes are stopped and started
// again by index.
package brokertest

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"

	"github.com/convergehq/converge/internal/broker"
)

// Start starts a server with fsync on every write in a fresh t.TempDir()
// on a free port, and shuts it down when the test ends.
func Start(t testing.TB) *broker.Server {
	t.Helper()
	return StartWith(t, broker.ServerConfig{Dir: t.TempDir()})
}

// StartWith starts a server with cfg and shuts it down when the test ends.
func StartWith(t testing.TB, cfg broker.ServerConfig) *broker.Server {
	t.Helper()
	s, err := broker.StartServer(cfg, Logger(t).With("side", "server"))
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Restart shuts s down and starts a new server on the same store directory
// and port, so connected clients reconnect to it by themselves.
func Restart(t testing.TB, s *broker.Server) *broker.Server {
	t.Helper()
	s.Shutdown()
	return StartWith(t, s.Config())
}

// Logger returns a logger that writes to the test log (shown on failure or
// with -v). Lines logged after the test has finished are dropped rather than
// panicking, since nats.go and nats-server log from their own goroutines.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
