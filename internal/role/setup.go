package role

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
)

// Streams is the broker topology converge needs, with replicas copies of
// each stream (3 in a cluster).
func Streams(replicas int) []broker.StreamConfig {
	return []broker.StreamConfig{
		{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}, Replicas: replicas},
		{Name: events.InventoryStream, Subjects: []string{events.InventorySubjects}, Replicas: replicas},
		{Name: events.DeadLetterStream, Subjects: []string{events.DeadLetterSubject}, Replicas: replicas},
	}
}

// Setup creates or updates the streams, once, before the services start
// (`converge setup`, or dev). Creating a stream that exists with the same
// configuration changes nothing, so running it again is harmless.
func Setup(ctx context.Context, n NATS, replicas int, log *slog.Logger) error {
	conn, err := n.connect(ctx, "converge-setup", log)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	defer conn.Close()
	for _, sc := range Streams(replicas) {
		if err := conn.EnsureStream(ctx, sc); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	return nil
}
