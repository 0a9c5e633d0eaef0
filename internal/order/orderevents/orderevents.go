// Package orderevents is the order service's door to the broker, beside
// orderhttp, its door to HTTP: it consumes inventory's replies and turns
// them into order.Service calls.
package orderevents

import (
	"log/slog"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/events/eventbroker"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/telemetry"
)

// Consumer is the durable consumer every instance of the order service
// shares: each reply goes to one of them.
func Consumer() broker.ConsumerConfig {
	return broker.ConsumerConfig{
		Stream:         events.InventoryStream,
		Durable:        order.Consumer,
		FilterSubjects: []string{events.InventorySubjects},
	}
}

// Handler applies a batch of replies to svc.
func Handler(svc *order.Service, tr telemetry.Tracing, log *slog.Logger) broker.BatchHandler {
	return eventbroker.Handler("order", tr, svc.ApplyBatch, log)
}
