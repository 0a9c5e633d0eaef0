// Package ordersql stores orders in DB A with plain SQL. The outbox and
// inbox tables live in the same database, so an order change and its events
// commit together.
package ordersql

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements order.Store on a store.DB.
type Store struct {
	db *store.DB
}

var _ order.Store = (*Store)(nil)

// Open migrates db (orders, outbox, inbox) and returns a Store over it.
func Open(ctx context.Context, db *store.DB) (*Store, error) {
	if err := db.Migrate(ctx, store.Migrations{Component: "order", FS: migrations}, outbox.Migrations(), inbox.Migrations()); err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

const columns = `id, customer_id, status, reason, items, created_at, updated_at`

// IdempotencyRetention is how long an Idempotency-Key is remembered: a
// client retrying a request within a day gets the first order back; after
// that the key may be used again.
const IdempotencyRetention = 24 * time.Hour

// PruneIdempotencyKeys forgets the keys stored before before and returns
// how many went.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE created_at < $1`, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return n, nil
}

// CountByStatus counts the orders in each status. It reads the whole
// status index, so callers should not run it often (metrics reuse its
// answer for a while).
func (s *Store) CountByStatus(ctx context.Context) (map[order.Status]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, COUNT(*) FROM orders GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count orders by status: %w", err)
	}
	defer rows.Close()
	counts := make(map[order.Status]int64)
	for rows.Next() {
		var (
			st order.Status
			n  int64
		)
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count orders by status: %w", err)
		}
		counts[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count orders by status: %w", err)
	}
	return counts, nil
}

// Get implements order.Store.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	return get(ctx, s.db, id, "")
}

// List implements order.Store.
func (s *Store) List(ctx context.Context, f order.Filter) ([]order.Order, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.CustomerID != "" {
		add("customer_id = $%d", f.CustomerID)
	}
	if f.Status != "" {
		add("status = $%d", string(f.Status))
	}
	if f.After != "" {
		add("id > $%d", f.After)
	}
	q := `SELECT ` + columns + ` FROM orders`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(` ORDER BY id LIMIT $%d`, len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []order.Order
	for rows.Next() {
		o, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// Record implements order.Store.
func (s *Store) Record(ctx context.Context, id string) (order.Record, error) {
	var (
		r        order.Record
		status   string
		accepted sql.NullInt64
		created  int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT status, accepted_at, created_at FROM orders WHERE id = $1`, id).Scan(&status, &accepted, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return order.Record{}, fmt.Errorf("%w: %s", order.ErrNotFound, id)
	}
	if err != nil {
		return order.Record{}, fmt.Errorf("order %s record: %w", id, err)
	}
	r.Status, r.CreatedAt = order.Status(status), time.UnixMicro(created).UTC()
	if accepted.Valid {
		r.AcceptedAt = time.UnixMicro(accepted.Int64).UTC()
	}
	if r.Sent, err = outbox.About(ctx, s.db, id); err != nil {
		return order.Record{}, err
	}
	if r.Applied, err = inbox.About(ctx, s.db, order.Consumer, id); err != nil {
		return order.Record{}, err
	}
	return r, nil
}

// Update implements order.Store.
func (s *Store) Update(ctx context.Context, fn func(order.Tx) error) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error { return fn(&txn{tx: tx}) })
}

// txn implements order.Tx.
type txn struct {
	tx *store.Tx
}

// Get locks the order's row (PostgreSQL) so that a decision taken on it
// holds until the commit, whichever instance takes the next one.
func (t *txn) Get(ctx context.Context, id string) (order.Order, error) {
	return get(ctx, t.tx, id, t.tx.ForUpdate())
}

func (t *txn) Idempotency(ctx context.Context, key string) (orderID, hash string, found bool, err error) {
	err = t.tx.QueryRowContext(ctx, `SELECT order_id, request_hash FROM idempotency_keys WHERE key = $1`, key).Scan(&orderID, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("idempotency key %q: %w", key, err)
	}
	return orderID, hash, true, nil
}

func (t *txn) Create(ctx context.Context, o order.Order, accepted time.Time, key, hash string) error {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return fmt.Errorf("create order %s: %w", o.ID, err)
	}
	var acceptedAt any // NULL when unknown
	if !accepted.IsZero() {
		acceptedAt = accepted.UnixMicro()
	}
	if _, err := t.tx.ExecContext(ctx, `INSERT INTO orders (`+columns+`, accepted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		o.ID, o.CustomerID, string(o.Status), o.Reason, string(items), o.CreatedAt.UnixMicro(), o.UpdatedAt.UnixMicro(), acceptedAt); err != nil {
		return fmt.Errorf("create order %s: %w", o.ID, err)
	}
	if key == "" {
		return nil
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO idempotency_keys (key, request_hash, order_id, created_at) VALUES ($1, $2, $3, $4)`,
		key, hash, o.ID, o.CreatedAt.UnixMicro())
	if store.IsUniqueViolation(err) {
		return fmt.Errorf("create order %s: %w", o.ID, order.ErrKeyTaken)
	}
	if err != nil {
		return fmt.Errorf("create order %s: idempotency key: %w", o.ID, err)
	}
	return nil
}

func (t *txn) SetStatus(ctx context.Context, id string, from, to order.Status, reason string, at time.Time) error {
	// The status guard is the rule itself: an order moves only from the
	// status the use case saw. left_pending_at keeps the first time the
	// order left PENDING, for the convergence-lag metric.
	res, err := t.tx.ExecContext(ctx, `UPDATE orders SET status = $1, reason = $2, updated_at = $3,
		left_pending_at = COALESCE(left_pending_at, $3) WHERE id = $4 AND status = $5`,
		string(to), reason, at.UnixMicro(), id, string(from))
	if err != nil {
		return fmt.Errorf("set order %s %s -> %s: %w", id, from, to, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("set order %s %s -> %s: %w", id, from, to, err)
	}
	if n != 1 {
		return fmt.Errorf("set order %s %s -> %s: %w: it is not %s (or does not exist)", id, from, to, order.ErrConflict, from)
	}
	return nil
}

func (t *txn) Claim(ctx context.Context, e events.Envelope) (bool, error) {
	return inbox.Claim(ctx, t.tx, order.Consumer, e)
}

func (t *txn) Emit(ctx context.Context, e events.Envelope) error { return outbox.Add(ctx, t.tx, e) }

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// get reads one order; lock is appended to the SELECT (a row lock clause,
// or empty).
func get(ctx context.Context, q queryer, id, lock string) (order.Order, error) {
	o, err := scan(q.QueryRowContext(ctx, `SELECT `+columns+` FROM orders WHERE id = $1`+lock, id))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Order{}, fmt.Errorf("%w: %s", order.ErrNotFound, id)
	}
	return o, err
}

func scan(row interface{ Scan(...any) error }) (order.Order, error) {
	var (
		o                order.Order
		status, items    string
		created, updated int64
	)
	if err := row.Scan(&o.ID, &o.CustomerID, &status, &o.Reason, &items, &created, &updated); err != nil {
		return order.Order{}, err
	}
	o.Status = order.Status(status)
	o.CreatedAt = time.UnixMicro(created).UTC()
	o.UpdatedAt = time.UnixMicro(updated).UTC()
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return order.Order{}, fmt.Errorf("order %s items: %w", o.ID, err)
	}
	return o, nil
}
