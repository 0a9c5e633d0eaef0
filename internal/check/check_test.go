package check_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/check"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// dbs returns migrated, empty order and inventory databases.
func dbs(t *testing.T) (orders, inventory *store.DB) {
	t.Helper()
	ctx := context.Background()
	orders, inventory = storetest.Open(t, "order"), storetest.Open(t, "inventory")
	if _, err := ordersql.Open(ctx, orders); err != nil {
		t.Fatal(err)
	}
	if _, err := inventorysql.Open(ctx, inventory); err != nil {
		t.Fatal(err)
	}
	return orders, inventory
}

func exec(t *testing.T, db *store.DB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := db.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// A consistent state: one confirmed order holding 2 of A, its two events
// written, published and applied on the other side.
func consistent(t *testing.T, orders, inventory *store.DB) {
	exec(t, orders,
		`INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at) VALUES ('o1', 'c', 'CONFIRMED', '', '[{"sku":"A","quantity":2}]', 1, 1)`,
		`INSERT INTO outbox (event_id, event_type, subject, payload, created_at, published_at) VALUES ('e1', 'io.converge.order.created', 'orders.created', '{"subject":"o1"}', 1, 1)`,
		`INSERT INTO inbox (consumer, event_id, event_type, applied_at) VALUES ('order', 'e2', 'io.converge.inventory.reserved', 1)`)
	exec(t, inventory,
		`INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES ('A', 10, 2, 1)`,
		`INSERT INTO reservations (order_id, status, created_at, updated_at) VALUES ('o1', 'active', 1, 1)`,
		`INSERT INTO reservation_items (order_id, sku, quantity) VALUES ('o1', 'A', 2)`,
		`INSERT INTO outbox (event_id, event_type, subject, payload, created_at, published_at) VALUES ('e2', 'io.converge.inventory.reserved', 'inventory.reserved', '{"subject":"o1"}', 1, 1)`,
		`INSERT INTO inbox (consumer, event_id, event_type, applied_at) VALUES ('inventory', 'e1', 'io.converge.order.created', 1)`)
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name      string
		orders    []string
		inventory []string
		fail      []string // the invariants that must fail, and no others
	}{
		{name: "consistent"},
		{name: "reserved drifts from reservations", inventory: []string{
			`PRAGMA ignore_check_constraints = ON`, `UPDATE stock SET reserved = 3`}, fail: []string{"reserved equals the sum"}},
		{name: "over-reserved", inventory: []string{
			`PRAGMA ignore_check_constraints = ON`, `UPDATE stock SET on_hand = 1`}, fail: []string{"0 <= reserved <= on_hand"}},
		{name: "unpublished outbox row", orders: []string{
			`INSERT INTO outbox (event_id, event_type, subject, payload, created_at) VALUES ('e9', 'io.converge.order.cancelled', 'orders.cancelled', '{"subject":"o1"}', 1)`},
			fail: []string{"every outbox is drained", "every event written was applied exactly once"}},
		{name: "pending order", orders: []string{
			`INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at) VALUES ('o2', 'c', 'PENDING', '', '[{"sku":"A","quantity":1}]', 1, 1)`},
			fail: []string{"no order is PENDING"}},
		{name: "confirmed order holds other items", orders: []string{
			`UPDATE orders SET items = '[{"sku":"A","quantity":3}]'`}, fail: []string{"holds exactly its items"}},
		{name: "cancelled order still holds stock", orders: []string{
			`UPDATE orders SET status = 'CANCELLED'`}, fail: []string{"no REJECTED, CANCELLED or unknown order holds stock"}},
		{name: "an event emitted twice", inventory: []string{
			`INSERT INTO outbox (event_id, event_type, subject, payload, created_at, published_at) VALUES ('e3', 'io.converge.inventory.reserved', 'inventory.reserved', '{"subject":"o1"}', 1, 1)`},
			fail: []string{"no order has an event of one type twice", "every event written was applied exactly once"}},
		{name: "published outbox rows pruned", orders: []string{`DELETE FROM outbox`}, inventory: []string{`DELETE FROM outbox`}},
		{name: "an event never applied", orders: []string{
			`DELETE FROM inbox`}, fail: []string{"every event written was applied exactly once"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orders, inventory := dbs(t)
			consistent(t, orders, inventory)
			exec(t, orders, tt.orders...)
			exec(t, inventory, tt.inventory...)
			results, err := check.Run(context.Background(), orders, inventory)
			if err != nil {
				t.Fatal(err)
			}
			var failed []string
			for _, r := range results {
				if !r.OK {
					failed = append(failed, r.Name+": "+r.Detail)
				}
			}
			if len(failed) != len(tt.fail) {
				t.Fatalf("got failures %q, want %q", failed, tt.fail)
			}
			for i, want := range tt.fail {
				if !strings.Contains(failed[i], want) {
					t.Fatalf("got failures %q, want %q", failed, tt.fail)
				}
			}
		})
	}
}

// Settle checks again until the invariants hold: here an event its relay
// marks published a moment later. With no time, it checks once.
func TestSettle(t *testing.T) {
	orders, inventory := dbs(t)
	consistent(t, orders, inventory)
	exec(t, orders, `UPDATE outbox SET published_at = NULL WHERE event_id = 'e1'`)
	ctx := context.Background()

	results, err := check.Settle(ctx, orders, inventory, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(check.Failed(results)) == 0 {
		t.Fatal("Settle with no time: every invariant holds with an event unpublished")
	}

	marked := make(chan struct{})
	go func() {
		defer close(marked)
		time.Sleep(300 * time.Millisecond) // the relay's mark, later
		if _, err := orders.ExecContext(ctx, `UPDATE outbox SET published_at = 2 WHERE event_id = 'e1'`); err != nil {
			t.Error(err)
		}
	}()
	results, err = check.Settle(ctx, orders, inventory, 10*time.Second)
	<-marked
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range check.Failed(results) {
		t.Errorf("after the mark: %s failed: %s", r.Name, r.Detail)
	}
}
