package order

import (
	"context"
	"fmt"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/timeline"
)

// service names the order service in timeline steps.
const service = "order"

// Timeline is the order service's part of an order's timeline, from DB A:
// accepted (the request arrived), committed (stored with its event), the
// events it published (created, cancelled) and the replies it applied.
// Rows the janitor pruned (published outbox rows after a day, inbox rows
// after a week) are no longer there to tell.
func (s *Service) Timeline(ctx context.Context, id string) (timeline.Timeline, error) {
	r, err := s.store.Record(ctx, id)
	if err != nil {
		return timeline.Timeline{}, fmt.Errorf("timeline of order %s: %w", id, err)
	}
	var steps []timeline.Step
	add := func(st timeline.Step) {
		if !st.At.IsZero() {
			st.Service = service
			steps = append(steps, st)
		}
	}
	add(timeline.Step{At: r.AcceptedAt, Step: "accepted", Detail: "the order service received the request"})
	add(timeline.Step{At: r.CreatedAt, Step: "committed", Detail: "stored PENDING with its order.created event (DB A)"})
	for _, e := range r.Sent {
		ev := timeline.Step{Event: string(e.Type), EventID: e.EventID}
		switch e.Type {
		case events.OrderCreated:
			ev.At, ev.Step, ev.Detail = e.PublishedAt, "published", "order.created acknowledged by the broker"
			add(ev)
		case events.OrderCancelled:
			ev.At, ev.Step, ev.Detail = e.CreatedAt, "cancel committed", "stored CANCELLED with its order.cancelled event (DB A)"
			add(ev)
			ev.At, ev.Step, ev.Detail = e.PublishedAt, "cancel published", "order.cancelled acknowledged by the broker"
			add(ev)
		}
	}
	for _, e := range r.Applied {
		ev := timeline.Step{At: e.AppliedAt, Event: string(e.Type), EventID: e.EventID}
		switch e.Type {
		case events.StockReserved:
			ev.Step, ev.Detail = "applied", "inventory.reserved applied: CONFIRMED unless cancelled first"
		case events.StockRejected:
			ev.Step, ev.Detail = "applied", "inventory.rejected applied: REJECTED unless cancelled first"
		case events.StockReleased:
			ev.Step, ev.Detail = "release applied", "inventory.released received"
		default:
			ev.Step = "applied"
		}
		add(ev)
	}
	return timeline.Timeline{OrderID: id, Status: string(r.Status), Steps: timeline.Merge(steps)}, nil
}
