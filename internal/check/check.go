// Package check verifies converge's invariants over DB A (orders) and DB B
// (inventory). It reads the tables directly, as an auditor would, and trusts
// none of the services' code.
package check

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/store"
)

// Result is one invariant's verdict.
type Result struct {
	Name   string
	OK     bool
	Detail string
}

// Failed returns the results whose invariant does not hold.
func Failed(results []Result) []Result {
	var failed []Result
	for _, r := range results {
		if !r.OK {
			failed = append(failed, r)
		}
	}
	return failed
}

// settleEvery is how often Settle checks again.
const settleEvery = 250 * time.Millisecond

// Settle runs Run until every invariant holds or d has passed, and returns
// the last results. A running system holds them only once it has settled:
// the events of its last orders applied, its relays' marks made. With d 0
// it checks once.
func Settle(ctx context.Context, orders, inventory *store.DB, d time.Duration) ([]Result, error) {
	deadline := time.Now().Add(d)
	for {
		results, err := Run(ctx, orders, inventory)
		if err != nil || len(Failed(results)) == 0 || !time.Now().Before(deadline) {
			return results, err
		}
		select {
		case <-ctx.Done():
			return results, ctx.Err()
		case <-time.After(settleEvery):
		}
	}
}

// Run checks every invariant once. Each database is read in one read
// transaction, a consistent snapshot even while the system runs. An error
// means a database could not be read, not that an invariant failed.
func Run(ctx context.Context, orders, inventory *store.DB) ([]Result, error) {
	// Read inventory first: an order that changes between the two snapshots
	// then shows as pending or as ahead of inventory, never as a false loss.
	var s *snapshot
	err := inventory.ReadTx(ctx, func(inv *sql.Tx) error {
		return orders.ReadTx(ctx, func(ord *sql.Tx) error {
			var err error
			s, err = load(ctx, ord, inv)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return []Result{
		s.reservedMatches(),
		s.stockInBounds(),
		s.noneUnpublished(),
		s.nonePending(),
		s.confirmedHoldItems(),
		s.othersHoldNothing(),
		s.noEventTwice(),
		s.everyEventApplied(),
	}, nil
}

type orderRow struct {
	status string
	items  map[string]int
}

type stockRow struct{ onHand, reserved int64 }

type reservation struct {
	status string
	items  map[string]int
}

type snapshot struct {
	orders       map[string]orderRow
	stock        map[string]stockRow
	reservations map[string]reservation
	unpublished  map[string]int // database -> rows not yet published
	// events per (source database, event type, order id)
	emitted map[string]int
	// written is the type of each event in the outboxes; applied counts
	// each event id in the consumers' inboxes.
	written map[string]string
	applied map[string]int
}

func load(ctx context.Context, orders, inventory *sql.Tx) (*snapshot, error) {
	s := &snapshot{
		orders: map[string]orderRow{}, stock: map[string]stockRow{}, reservations: map[string]reservation{},
		unpublished: map[string]int{}, emitted: map[string]int{}, written: map[string]string{}, applied: map[string]int{},
	}
	if err := each(ctx, inventory, `SELECT sku, on_hand, reserved FROM stock`, func(r *sql.Rows) error {
		var sku string
		var st stockRow
		err := r.Scan(&sku, &st.onHand, &st.reserved)
		s.stock[sku] = st
		return err
	}); err != nil {
		return nil, err
	}
	if err := each(ctx, inventory, `SELECT order_id, status FROM reservations`, func(r *sql.Rows) error {
		var id, status string
		err := r.Scan(&id, &status)
		s.reservations[id] = reservation{status: status, items: map[string]int{}}
		return err
	}); err != nil {
		return nil, err
	}
	if err := each(ctx, inventory, `SELECT order_id, sku, quantity FROM reservation_items`, func(r *sql.Rows) error {
		var id, sku string
		var q int
		if err := r.Scan(&id, &sku, &q); err != nil {
			return err
		}
		res, ok := s.reservations[id]
		if !ok {
			return fmt.Errorf("items of reservation %s, which does not exist", id)
		}
		res.items[sku] = q
		return nil
	}); err != nil {
		return nil, err
	}
	if err := each(ctx, orders, `SELECT id, status, items FROM orders`, func(r *sql.Rows) error {
		var id, status, items string
		if err := r.Scan(&id, &status, &items); err != nil {
			return err
		}
		var lines []struct {
			SKU      string `json:"sku"`
			Quantity int    `json:"quantity"`
		}
		if err := json.Unmarshal([]byte(items), &lines); err != nil {
			return fmt.Errorf("order %s items: %w", id, err)
		}
		o := orderRow{status: status, items: map[string]int{}}
		for _, l := range lines {
			o.items[l.SKU] = l.Quantity
		}
		s.orders[id] = o
		return nil
	}); err != nil {
		return nil, err
	}
	for name, db := range map[string]*sql.Tx{"order": orders, "inventory": inventory} {
		if err := each(ctx, db, `SELECT event_id, event_type, payload, published_at IS NULL FROM outbox`, func(r *sql.Rows) error {
			var id, typ string
			var payload []byte
			var unpublished bool
			if err := r.Scan(&id, &typ, &payload, &unpublished); err != nil {
				return err
			}
			var e struct {
				Subject string `json:"subject"`
			}
			if err := json.Unmarshal(payload, &e); err != nil {
				return fmt.Errorf("%s outbox payload: %w", name, err)
			}
			s.emitted[typ+" "+e.Subject]++
			s.written[id] = typ
			if unpublished {
				s.unpublished[name]++
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if err := each(ctx, db, `SELECT event_id FROM inbox`, func(r *sql.Rows) error {
			var id string
			err := r.Scan(&id)
			s.applied[id]++
			return err
		}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func each(ctx context.Context, db *sql.Tx, q string, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("check: %s: %w", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return fmt.Errorf("check: %s: %w", q, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check: %s: %w", q, err)
	}
	return nil
}

// failures turns a list of problems into a result; it shows the first few.
func result(name string, checked int, what string, problems []string) Result {
	if len(problems) == 0 {
		return Result{Name: name, OK: true, Detail: fmt.Sprintf("%d %s", checked, what)}
	}
	slices.Sort(problems)
	shown := problems[:min(5, len(problems))]
	d := fmt.Sprintf("%d of %d %s: %s", len(problems), checked, what, strings.Join(shown, "; "))
	if len(problems) > len(shown) {
		d += "; …"
	}
	return Result{Name: name, Detail: d}
}

func (s *snapshot) reservedMatches() Result {
	held := map[string]int64{}
	for _, r := range s.reservations {
		if r.status == "active" {
			for sku, q := range r.items {
				held[sku] += int64(q)
			}
		}
	}
	var bad []string
	for sku, st := range s.stock {
		if st.reserved != held[sku] {
			bad = append(bad, fmt.Sprintf("%s reserved %d, active reservations hold %d", sku, st.reserved, held[sku]))
		}
	}
	for sku := range held {
		if _, ok := s.stock[sku]; !ok {
			bad = append(bad, fmt.Sprintf("%s is reserved but has no stock row", sku))
		}
	}
	return result("reserved equals the sum of active reservations", len(s.stock), "SKUs", bad)
}

func (s *snapshot) stockInBounds() Result {
	var bad []string
	for sku, st := range s.stock {
		if st.reserved < 0 || st.reserved > st.onHand {
			bad = append(bad, fmt.Sprintf("%s on_hand %d reserved %d", sku, st.onHand, st.reserved))
		}
	}
	return result("0 <= reserved <= on_hand", len(s.stock), "SKUs", bad)
}

func (s *snapshot) noneUnpublished() Result {
	var bad []string
	for db, n := range s.unpublished {
		bad = append(bad, fmt.Sprintf("%s outbox has %d unpublished events", db, n))
	}
	return result("every outbox is drained", 2, "outboxes", bad)
}

func (s *snapshot) nonePending() Result {
	var bad []string
	for id, o := range s.orders {
		if o.status == "PENDING" {
			bad = append(bad, id)
		}
	}
	return result("no order is PENDING", len(s.orders), "orders", bad)
}

func (s *snapshot) confirmedHoldItems() Result {
	var bad []string
	n := 0
	for id, o := range s.orders {
		if o.status != "CONFIRMED" {
			continue
		}
		n++
		r, ok := s.reservations[id]
		switch {
		case !ok || r.status != "active":
			bad = append(bad, fmt.Sprintf("%s has no active reservation (%s)", id, r.status))
		case !maps.Equal(r.items, o.items):
			bad = append(bad, fmt.Sprintf("%s holds %v, ordered %v", id, r.items, o.items))
		}
	}
	return result("every CONFIRMED order holds exactly its items", n, "confirmed orders", bad)
}

func (s *snapshot) othersHoldNothing() Result {
	var bad []string
	n := 0
	for id, r := range s.reservations {
		if r.status != "active" {
			continue
		}
		n++
		if o, ok := s.orders[id]; !ok || o.status != "CONFIRMED" {
			bad = append(bad, fmt.Sprintf("%s holds stock but is %s", id, cmp(ok, o.status, "unknown to the order service")))
		}
	}
	return result("no REJECTED, CANCELLED or unknown order holds stock", n, "active reservations", bad)
}

func (s *snapshot) noEventTwice() Result {
	var bad []string
	for key, n := range s.emitted {
		if n > 1 {
			bad = append(bad, fmt.Sprintf("%s emitted %d times", key, n))
		}
	}
	return result("no order has an event of one type twice (no effect applied twice)", len(s.emitted), "order events", bad)
}

// everyEventApplied checks that every event in an outbox was applied by
// the other side, once (an inbox holds an event id at most once per
// consumer): none lost, none doubled. An inbox may also hold events whose
// outbox rows were pruned (published rows go after a day); those are not
// checked.
func (s *snapshot) everyEventApplied() Result {
	var bad []string
	ids := slices.Sorted(maps.Keys(s.written))
	for _, id := range ids {
		if n := s.applied[id]; n != 1 {
			bad = append(bad, fmt.Sprintf("%s %s applied %d times", s.written[id], id, n))
		}
	}
	return result("every event written was applied exactly once", len(s.written), "events", bad)
}

func cmp(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}
