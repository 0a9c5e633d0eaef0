package role

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory/inventoryevents"
	"github.com/convergehq/converge/internal/order/orderevents"
)

// StreamMaxBytes bounds each stream. A full stream refuses new events
// (they wait in the outboxes, and the relays say so) rather than dropping
// any: nothing unconsumed is ever dropped silently.
const StreamMaxBytes = 1 << 30

// Streams is the broker topology converge needs, with replicas copies of
// each stream (3 in a cluster). The event streams keep a message until
// every consumer has acknowledged it (interest retention); the dead-letter
// stream keeps its messages until an operator deals with them.
func Streams(replicas int) []broker.StreamConfig {
	return []broker.StreamConfig{
		{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}, Replicas: replicas, Interest: true, MaxBytes: StreamMaxBytes},
		{Name: events.InventoryStream, Subjects: []string{events.InventorySubjects}, Replicas: replicas, Interest: true, MaxBytes: StreamMaxBytes},
		{Name: events.DeadLetterStream, Subjects: []string{events.DeadLetterSubject}, Replicas: replicas, MaxBytes: StreamMaxBytes},
	}
}

// Setup creates or updates the streams and the services' durable
// consumers, once, before the services start (`converge setup`, or dev). A
// stream or consumer that exists as wanted is left alone, so running it
// again changes nothing.
func Setup(ctx context.Context, n NATS, replicas int, log *slog.Logger) error {
	conn, err := n.connect(ctx, "converge-setup", log)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	defer conn.Close()
	// An interest-retention stream drops what it receives while it has no
	// consumer. So a stream that does not exist yet is first made keeping
	// everything, then the consumers, then the stream keeps only what they
	// have not acknowledged: a service that publishes before setup has
	// finished (a Kubernetes hook runs after the services start) loses
	// nothing. Every instance of a service binds to its service's consumer
	// and never creates it.
	streams := Streams(replicas)
	for _, sc := range streams {
		_, err := conn.JetStream().Stream(ctx, sc.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			keep := sc
			keep.Interest = false
			err = conn.EnsureStream(ctx, keep)
		}
		if err != nil {
			return fmt.Errorf("setup: stream %s: %w", sc.Name, err)
		}
	}
	for _, cc := range []broker.ConsumerConfig{orderevents.Consumer(), inventoryevents.Consumer()} {
		if err := conn.EnsureConsumer(ctx, cc); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, sc := range streams {
		if err := conn.EnsureStream(ctx, sc); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	return nil
}
