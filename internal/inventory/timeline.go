package inventory

import (
	"context"
	"fmt"
	"strings"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/timeline"
)

// Timeline is the inventory service's part of an order's timeline, from
// DB B: when the order's events were delivered (applied, in the inbox),
// what it decided (reserved, rejected, released) and when each reply was
// published. It is empty for an order inventory has not heard of yet.
func (s *Service) Timeline(ctx context.Context, orderID string) ([]timeline.Step, error) {
	r, err := s.store.Record(ctx, orderID)
	if err != nil {
		return nil, fmt.Errorf("timeline of order %s: %w", orderID, err)
	}
	steps := []timeline.Step{}
	add := func(st timeline.Step) {
		if !st.At.IsZero() {
			st.Service = "inventory"
			steps = append(steps, st)
		}
	}
	for _, e := range r.Applied {
		ev := timeline.Step{At: e.AppliedAt, Event: string(e.Type), EventID: e.EventID}
		switch e.Type {
		case events.OrderCreated:
			ev.Step, ev.Detail = "delivered", "order.created applied by inventory (DB B)"
		case events.OrderCancelled:
			ev.Step, ev.Detail = "cancel delivered", "order.cancelled applied by inventory (DB B)"
		default:
			ev.Step = "delivered"
		}
		add(ev)
	}
	for _, e := range r.Sent {
		ev := timeline.Step{At: e.CreatedAt, Event: string(e.Type), EventID: e.EventID}
		published := "reply published"
		switch e.Type {
		case events.StockReserved:
			ev.Step, ev.Detail = "reserved", "every item reserved"
		case events.StockRejected:
			ev.Step, ev.Detail = "rejected", "nothing reserved: "+r.Reason
		case events.StockReleased:
			ev.Step, ev.Detail, published = "released", "the reservation given back", "release published"
		default:
			continue
		}
		add(ev)
		ev.At, ev.Step, ev.Detail = e.PublishedAt, published, strings.TrimPrefix(string(e.Type), "io.converge.")+" acknowledged by the broker"
		add(ev)
	}
	return timeline.Merge(steps), nil
}
