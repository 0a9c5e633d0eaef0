// Package inventoryevents is the inventory service's door to the broker,
// beside inventoryhttp, its door to HTTP: it consumes the order service's
// events and turns them into inventory.Service calls.
package inventoryevents

import (
	"log/slog"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/events/eventbroker"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/telemetry"
)

// Consumer is the durable consumer every instance of the inventory service
// shares: each event goes to one of them.
func Consumer() broker.ConsumerConfig {
	return broker.ConsumerConfig{
		Stream:         events.OrdersStream,
		Durable:        inventory.Consumer,
		FilterSubjects: []string{events.OrdersSubjects},
	}
}

// Handler applies a batch of the order service's events to svc.
func Handler(svc *inventory.Service, tr telemetry.Tracing, log *slog.Logger) broker.BatchHandler {
	return eventbroker.Handler("inventory", tr, svc.ApplyBatch, log)
}
