package system_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/store"
)

// An order.cancelled that reaches inventory before its order.created: the
// cancel leaves a marker, the creation then reserves nothing, and the
// system ends consistent.
//
// With the broker down, the order is placed and cancelled, so both events
// wait in the order service's outbox, created first. The test then
// publishes the cancel itself, under the event id the outbox gave it, while
// the relays cannot publish (embedded: through a second broker on the same
// store, on a port the services do not know; cluster: with the order
// instances stopped). Only then do the relays publish: whatever they send
// lands after the cancel, and their copy of the cancel is dropped as a
// duplicate. No step races the relay.
func TestCancelOvertakesCreated(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("A-1", 10)

	if err := sys.StopBroker(); err != nil {
		t.Fatal(err)
	}
	o := c.place("c-1", item{"A-1", 2})
	if r := c.do("POST", "/api/v1/orders/"+o.ID+"/cancel", nil); r.Status != http.StatusAccepted {
		t.Fatalf("cancel: status %d, want 202: %s", r.Status, r.Body)
	}
	orders, inv := databases(t, sys)
	pending := outboxOf(t, orders, o.ID)
	if len(pending) != 2 || pending[0].Type != string(events.OrderCreated) || pending[1].Type != string(events.OrderCancelled) {
		t.Fatalf("outbox of order %s: got %+v, want its created then its cancelled event", o.ID, pending)
	}
	created, cancel := pending[0], pending[1]
	header := map[string]string{"Content-Type": "application/cloudevents+json"}
	if cancel.TraceParent != "" {
		header["traceparent"] = cancel.TraceParent
	}
	sys.PublishAhead(t, broker.Message{ID: cancel.ID, Subject: cancel.Subject, Data: cancel.Payload, Header: header})
	if err := sys.StartBroker(); err != nil {
		t.Fatal(err)
	}

	// The relay has sent its copies once both rows are marked published,
	// and inventory has seen both events once its inbox holds the later one.
	eventually(t, 10*time.Second, "the relay to publish the events of "+o.ID, func() bool {
		return queryInt(t, orders, `SELECT count(*) FROM outbox WHERE event_id IN ($1, $2) AND published_at IS NOT NULL`, created.ID, cancel.ID) == 2
	})
	eventually(t, 10*time.Second, "inventory to apply order.created of "+o.ID, func() bool {
		return queryInt(t, inv, `SELECT count(*) FROM inbox WHERE event_id = $1`, created.ID) == 1
	})
	// The streams keep a message only until it is consumed, so the order of
	// delivery is read from inventory's inbox, in the order it applied them.
	if got := appliedOrder(t, inv, created.ID, cancel.ID); len(got) != 2 || got[0] != cancel.ID {
		t.Fatalf("inventory inbox: got event ids %v in the order applied, want the cancel %s once and first, then the created %s", got, cancel.ID, created.ID)
	}
	if got := c.final(o.ID); got.Status != "CANCELLED" {
		t.Fatalf("order %s: got %s, want CANCELLED", o.ID, got.Status)
	}
	if s := c.stock("A-1"); s.OnHand != 10 || s.Reserved != 0 || s.Available != 10 {
		t.Fatalf("A-1: got on_hand %d reserved %d available %d, want 10, 0 and 10", s.OnHand, s.Reserved, s.Available)
	}
	var status string
	if err := inv.QueryRowContext(context.Background(), `SELECT status FROM reservations WHERE order_id = $1`, o.ID).Scan(&status); err != nil || status != "cancelled" {
		t.Fatalf("reservation of %s: got %q (%v), want the cancelled marker", o.ID, status, err)
	}
	if n := queryInt(t, inv, `SELECT count(*) FROM reservation_items WHERE order_id = $1`, o.ID); n != 0 {
		t.Fatalf("reservation items of %s: got %d, want 0", o.ID, n)
	}
	checkInvariants(t, sys)
}

// outboxRow is an event in the order service's outbox, as the relay
// publishes it.
type outboxRow struct {
	ID, Type, Subject, TraceParent string
	Payload                        []byte
}

// outboxOf returns the outbox rows of the order, in outbox order.
func outboxOf(t testing.TB, db *store.DB, orderID string) []outboxRow {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT event_id, event_type, subject, payload, traceparent FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatalf("read the order outbox: %v", err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.ID, &r.Type, &r.Subject, &r.Payload, &r.TraceParent); err != nil {
			t.Fatal(err)
		}
		e, err := events.Decode(r.Payload)
		if err != nil {
			t.Fatalf("outbox row %s: %v", r.ID, err)
		}
		if e.Subject == orderID {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// databases opens the deployment's two databases for the rest of the test.
func databases(t testing.TB, d deployment) (orders, inventory *store.DB) {
	t.Helper()
	orders, inventory, err := d.Databases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		orders.Close()
		inventory.Close()
	})
	return orders, inventory
}

func queryInt(t testing.TB, db *store.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// appliedOrder returns which of ids inventory's inbox holds, in the order
// they were applied.
func appliedOrder(t testing.TB, inv *store.DB, ids ...string) []string {
	t.Helper()
	rows, err := inv.QueryContext(context.Background(), `SELECT event_id FROM inbox WHERE event_id IN ($1, $2) ORDER BY applied_at`, ids[0], ids[1])
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
