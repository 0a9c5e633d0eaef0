// Package inventorysql stores stock and reservations in DB B with plain
// SQL, next to inventory's own outbox and inbox tables.
package inventorysql

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements inventory.Store on a store.DB.
type Store struct {
	db *store.DB
}

var _ inventory.Store = (*Store)(nil)

// Open migrates db (stock, reservations, outbox, inbox) and returns a Store.
func Open(ctx context.Context, db *store.DB) (*Store, error) {
	if err := db.Migrate(ctx, store.Migrations{Component: "inventory", FS: migrations}, outbox.Migrations(), inbox.Migrations()); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

const columns = `sku, on_hand, reserved, updated_at`

// Get implements inventory.Store.
func (s *Store) Get(ctx context.Context, sku string) (inventory.Item, error) {
	return get(ctx, s.db, sku)
}

// List implements inventory.Store.
func (s *Store) List(ctx context.Context, after string, limit int) ([]inventory.Item, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+columns+` FROM stock WHERE sku > $1 ORDER BY sku LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list stock: %w", err)
	}
	return collect(rows)
}

// Record implements inventory.Store. An order inventory has not heard of
// has an empty record.
func (s *Store) Record(ctx context.Context, orderID string) (inventory.Record, error) {
	var (
		r   inventory.Record
		err error
	)
	if r.Applied, err = inbox.About(ctx, s.db, inventory.Consumer, orderID); err != nil {
		return inventory.Record{}, err
	}
	if r.Sent, err = outbox.About(ctx, s.db, orderID); err != nil {
		return inventory.Record{}, err
	}
	err = s.db.QueryRowContext(ctx, `SELECT reason FROM reservations WHERE order_id = $1`, orderID).Scan(&r.Reason)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return inventory.Record{}, fmt.Errorf("reservation of %s: %w", orderID, err)
	}
	return r, nil
}

// Update implements inventory.Store.
func (s *Store) Update(ctx context.Context, fn func(inventory.Tx) error) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error { return fn(&txn{tx: tx}) })
}

type txn struct {
	tx *store.Tx
}

func (t *txn) Stock(ctx context.Context, skus []string) (map[string]inventory.Item, error) {
	ph := make([]string, len(skus))
	args := make([]any, len(skus))
	for i, s := range skus {
		ph[i], args[i] = fmt.Sprintf("$%d", i+1), s
	}
	rows, err := t.tx.QueryContext(ctx, `SELECT `+columns+` FROM stock WHERE sku IN (`+strings.Join(ph, ",")+`) ORDER BY sku`+t.tx.ForUpdate(), args...)
	if err != nil {
		return nil, fmt.Errorf("read stock: %w", err)
	}
	items, err := collect(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]inventory.Item, len(items))
	for _, it := range items {
		out[it.SKU] = it
	}
	return out, nil
}

func (t *txn) LockOrders(ctx context.Context, orderIDs []string) error {
	if t.tx.Engine() != store.Postgres {
		return nil
	}
	for _, id := range sortedUnique(orderIDs) {
		if err := t.tx.Lock(ctx, "reservation:"+id); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) LockStock(ctx context.Context, skus []string) error {
	skus = sortedUnique(skus)
	if t.tx.Engine() != store.Postgres || len(skus) == 0 {
		return nil
	}
	ph := make([]string, len(skus))
	args := make([]any, len(skus))
	for i, s := range skus {
		ph[i], args[i] = fmt.Sprintf("$%d", i+1), s
	}
	rows, err := t.tx.QueryContext(ctx, `SELECT sku FROM stock WHERE sku IN (`+strings.Join(ph, ",")+`) ORDER BY sku FOR UPDATE`, args...)
	if err != nil {
		return fmt.Errorf("lock stock: %w", err)
	}
	return errors.Join(rows.Close(), rows.Err())
}

func sortedUnique(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

func (t *txn) SetOnHand(ctx context.Context, sku string, onHand int64, at time.Time) (inventory.Item, error) {
	res, err := t.tx.ExecContext(ctx, `INSERT INTO stock (sku, on_hand, reserved, updated_at) VALUES ($1, $2, 0, $3)
		ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand, updated_at = excluded.updated_at
		WHERE stock.reserved <= excluded.on_hand`, sku, onHand, at.UnixMicro())
	if err != nil {
		return inventory.Item{}, fmt.Errorf("set on_hand of %s: %w", sku, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return inventory.Item{}, fmt.Errorf("set on_hand of %s: %w", sku, err)
	} else if n == 0 {
		cur, err := get(ctx, t.tx, sku)
		if err != nil {
			return inventory.Item{}, err
		}
		return inventory.Item{}, fmt.Errorf("%w: on_hand %d is below the %d units reserved for %s", inventory.ErrConflict, onHand, cur.Reserved, sku)
	}
	return get(ctx, t.tx, sku)
}

func (t *txn) Reserve(ctx context.Context, sku string, qty int, at time.Time) error {
	return t.adjust(ctx, `UPDATE stock SET reserved = reserved + $1, updated_at = $2
		WHERE sku = $3 AND on_hand - reserved >= $1`, sku, qty, at)
}

func (t *txn) Release(ctx context.Context, sku string, qty int, at time.Time) error {
	return t.adjust(ctx, `UPDATE stock SET reserved = reserved - $1, updated_at = $2
		WHERE sku = $3 AND reserved >= $1`, sku, qty, at)
}

func (t *txn) adjust(ctx context.Context, q, sku string, qty int, at time.Time) error {
	res, err := t.tx.ExecContext(ctx, q, qty, at.UnixMicro(), sku)
	if err != nil {
		return fmt.Errorf("adjust %s by %d: %w", sku, qty, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("adjust %s by %d: %w", sku, qty, err)
	}
	if n != 1 {
		return fmt.Errorf("%w: %s cannot move by %d units", inventory.ErrConflict, sku, qty)
	}
	return nil
}

func (t *txn) Reservation(ctx context.Context, orderID string) (inventory.Reservation, bool, error) {
	// A lock on the order's id, not on its row: the row may not exist yet,
	// and creation and cancel must not both decide that it does not.
	if err := t.tx.Lock(ctx, "reservation:"+orderID); err != nil {
		return inventory.Reservation{}, false, fmt.Errorf("reservation of %s: %w", orderID, err)
	}
	r := inventory.Reservation{OrderID: orderID}
	var status string
	err := t.tx.QueryRowContext(ctx, `SELECT status, reason FROM reservations WHERE order_id = $1`, orderID).Scan(&status, &r.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return inventory.Reservation{}, false, nil
	}
	if err != nil {
		return inventory.Reservation{}, false, fmt.Errorf("reservation of %s: %w", orderID, err)
	}
	r.Status = inventory.ReservationStatus(status)
	rows, err := t.tx.QueryContext(ctx, `SELECT sku, quantity FROM reservation_items WHERE order_id = $1 ORDER BY sku`, orderID)
	if err != nil {
		return inventory.Reservation{}, false, fmt.Errorf("reservation of %s: %w", orderID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var it events.Item
		if err := rows.Scan(&it.SKU, &it.Quantity); err != nil {
			return inventory.Reservation{}, false, fmt.Errorf("reservation of %s: %w", orderID, err)
		}
		r.Items = append(r.Items, it)
	}
	if err := rows.Err(); err != nil {
		return inventory.Reservation{}, false, fmt.Errorf("reservation of %s: %w", orderID, err)
	}
	return r, true, nil
}

// AddReservation inserts a reservation with its items. The primary key
// refuses a second decision for one order, whatever the code above it did.
func (t *txn) AddReservation(ctx context.Context, r inventory.Reservation, at time.Time) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO reservations (order_id, status, reason, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $4)`,
		r.OrderID, string(r.Status), r.Reason, at.UnixMicro())
	if store.IsUniqueViolation(err) {
		return fmt.Errorf("add reservation of %s: %w: decided already", r.OrderID, inventory.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("add reservation of %s: %w", r.OrderID, err)
	}
	if r.Status != inventory.Active {
		return nil
	}
	for _, it := range r.Items {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO reservation_items (order_id, sku, quantity) VALUES ($1, $2, $3)`,
			r.OrderID, it.SKU, it.Quantity); err != nil {
			return fmt.Errorf("add reservation of %s: %s: %w", r.OrderID, it.SKU, err)
		}
	}
	return nil
}

func (t *txn) SetReservationStatus(ctx context.Context, orderID string, from, to inventory.ReservationStatus, at time.Time) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE reservations SET status = $1, updated_at = $2 WHERE order_id = $3 AND status = $4`,
		string(to), at.UnixMicro(), orderID, string(from))
	if err != nil {
		return fmt.Errorf("reservation of %s %s -> %s: %w", orderID, from, to, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("reservation of %s %s -> %s: %w", orderID, from, to, err)
	}
	if n != 1 {
		return fmt.Errorf("reservation of %s %s -> %s: %w: it is not %s", orderID, from, to, inventory.ErrConflict, from)
	}
	return nil
}

func (t *txn) Claim(ctx context.Context, e events.Envelope) (bool, error) {
	return inbox.Claim(ctx, t.tx, inventory.Consumer, e)
}

func (t *txn) Emit(ctx context.Context, e events.Envelope) error { return outbox.Add(ctx, t.tx, e) }

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func get(ctx context.Context, q queryer, sku string) (inventory.Item, error) {
	it, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM stock WHERE sku = $1`, sku))
	if errors.Is(err, sql.ErrNoRows) {
		return inventory.Item{}, fmt.Errorf("%w: %s", inventory.ErrNotFound, sku)
	}
	if err != nil {
		return inventory.Item{}, fmt.Errorf("read stock of %s: %w", sku, err)
	}
	return it, nil
}

func collect(rows *sql.Rows) ([]inventory.Item, error) {
	defer rows.Close()
	var out []inventory.Item
	for rows.Next() {
		it, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("read stock: %w", err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stock: %w", err)
	}
	return out, nil
}

func scan(row interface{ Scan(...any) error }) (inventory.Item, error) {
	var (
		it      inventory.Item
		updated int64
	)
	if err := row.Scan(&it.SKU, &it.OnHand, &it.Reserved, &updated); err != nil {
		return inventory.Item{}, err
	}
	it.Available = it.OnHand - it.Reserved
	it.UpdatedAt = time.UnixMicro(updated).UTC()
	return it, nil
}
