package role_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/role"
)

// Setup makes the streams and consumers; run again, it changes nothing.
// Every stream keeps its messages (limits retention) within a size bound
// that refuses rather than drops, and a message published before the
// consumers existed is still there for them.
func TestSetup(t *testing.T) {
	s := brokertest.Start(t)
	ctx := context.Background()
	log := brokertest.Logger(t)
	c, err := broker.Connect(ctx, s.ClientURL(), "setup-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	// An event published before setup ran, into a stream made the old way.
	if err := c.EnsureStream(ctx, broker.StreamConfig{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}}); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishBatch(ctx, []broker.Message{{ID: "early", Subject: "orders.created", Data: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := role.Setup(ctx, role.NATS{URLs: s.ClientURL()}, 1, log); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}
	want := map[string]jetstream.RetentionPolicy{
		events.OrdersStream: jetstream.LimitsPolicy, events.InventoryStream: jetstream.LimitsPolicy, events.DeadLetterStream: jetstream.LimitsPolicy,
	}
	for name, retention := range want {
		st, err := c.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		cfg := st.CachedInfo().Config
		if cfg.Retention != retention || cfg.MaxBytes != role.StreamMaxBytes || cfg.Discard != jetstream.DiscardNew {
			t.Errorf("stream %s: retention %v max bytes %d discard %v; want %v, %d, discard new", name, cfg.Retention, cfg.MaxBytes, cfg.Discard, retention, role.StreamMaxBytes)
		}
	}
	for stream, durable := range map[string]string{events.OrdersStream: "inventory", events.InventoryStream: "order"} {
		cons, err := c.JetStream().Consumer(ctx, stream, durable)
		if err != nil {
			t.Fatalf("consumer %s on %s: %v", durable, stream, err)
		}
		if stream == events.OrdersStream {
			if n := cons.CachedInfo().NumPending; n != 1 {
				t.Errorf("consumer %s: %d messages pending, want the 1 published before setup", durable, n)
			}
		}
	}
}
