package role

import (
	"context"
	"fmt"
	"log/slog"

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
// each stream (3 in a cluster). They keep every message (limits
// retention) up to StreamMaxBytes; each service's janitor removes from its
// own stream what every consumer has acknowledged (broker.PruneConsumed),
// and the dead letters stay until an operator deals with them.
func Streams(replicas int) []broker.StreamConfig {
	return []broker.StreamConfig{
		{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}, Replicas: replicas, MaxBytes: StreamMaxBytes},
		{Name: events.InventoryStream, Subjects: []string{events.InventorySubjects}, Replicas: replicas, MaxBytes: StreamMaxBytes},
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
	// Every instance of a service binds to its service's consumer and never
	// creates it.
	for _, sc := range Streams(replicas) {
		if err := conn.EnsureStream(ctx, sc); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	for _, cc := range []broker.ConsumerConfig{orderevents.Consumer(), inventoryevents.Consumer()} {
		if err := conn.EnsureConsumer(ctx, cc); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	return nil
}
