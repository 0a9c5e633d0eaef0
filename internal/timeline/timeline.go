// Package timeline is the life of an order as the services recorded it:
// each service reports the steps its own database holds (when a request was
// accepted, a transaction committed, an event published or applied), and
// the gateway merges them by time. No tracing backend is needed: these are
// the services' own records.
package timeline

import (
	"slices"
	"time"
)

// Step is one moment of an order's life.
type Step struct {
	At      time.Time `json:"at"`
	Step    string    `json:"step"`               // accepted, committed, published, delivered, reserved, ...
	Service string    `json:"service"`            // the service that recorded it: order or inventory
	Event   string    `json:"event,omitempty"`    // the event the step is about, if any
	EventID string    `json:"event_id,omitempty"` // its id
	Detail  string    `json:"detail,omitempty"`
}

// Timeline is an order's steps, oldest first.
type Timeline struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status,omitempty"` // the order's status now
	Steps   []Step `json:"steps"`
}

// Merge returns the steps of parts in time order; steps recorded at the
// same instant keep the order they were given in.
func Merge(parts ...[]Step) []Step {
	out := []Step{}
	for _, p := range parts {
		out = append(out, p...)
	}
	slices.SortStableFunc(out, func(a, b Step) int { return a.At.Compare(b.At) })
	return out
}
