// Package outbox makes "change the database and publish an event" atomic.
// A service calls Add inside the transaction that makes the change; the
// Relay publishes committed rows to the broker, awaiting each
// acknowledgement, and marks them published only then.
package outbox

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"fmt"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/store"
)

//go:embed migrations
var migrations embed.FS

// Migrations is the outbox table's schema, for store.DB.Migrate.
func Migrations() store.Migrations {
	return store.Migrations{Component: "outbox", FS: migrations}
}

// Add writes e to the outbox as part of tx. The event is published only if
// tx commits.
func Add(ctx context.Context, tx *store.Tx, e events.Envelope) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox add %s: %w", e.Type, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO outbox (event_id, event_type, subject, event_subject, payload, traceparent, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		e.ID, string(e.Type), e.BrokerSubject(), e.Subject, payload, e.TraceParent, time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("outbox add %s %s: %w", e.Type, e.ID, err)
	}
	return nil
}

// Backlog counts the rows not yet published and says when the oldest of
// them was written (zero when there are none). It reads the partial index
// of unpublished rows, so it costs what the backlog is long.
func Backlog(ctx context.Context, db *store.DB) (rows int64, oldest time.Time, err error) {
	var first sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT COUNT(*), (SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1)
		FROM outbox WHERE published_at IS NULL`).Scan(&rows, &first)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("outbox backlog: %w", err)
	}
	if first.Valid {
		oldest = time.UnixMicro(first.Int64)
	}
	return rows, oldest, nil
}

// Entry is an event an outbox holds.
type Entry struct {
	EventID     string
	Type        events.Type
	CreatedAt   time.Time // written, in the transaction that made the change
	PublishedAt time.Time // acknowledged by the broker; zero while unpublished
}

// About returns the events the outbox holds whose subject is subject, in
// the order they were written. Published rows go after outbox.Retention.
func About(ctx context.Context, db *store.DB, subject string) ([]Entry, error) {
	rows, err := db.QueryContext(ctx, `SELECT event_id, event_type, created_at, published_at
		FROM outbox WHERE event_subject = $1 ORDER BY seq`, subject)
	if err != nil {
		return nil, fmt.Errorf("outbox events about %s: %w", subject, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e         Entry
			typ       string
			created   int64
			published sql.NullInt64
		)
		if err := rows.Scan(&e.EventID, &typ, &created, &published); err != nil {
			return nil, fmt.Errorf("outbox events about %s: %w", subject, err)
		}
		e.Type, e.CreatedAt = events.Type(typ), time.UnixMicro(created).UTC()
		if published.Valid {
			e.PublishedAt = time.UnixMicro(published.Int64).UTC()
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox events about %s: %w", subject, err)
	}
	return out, nil
}
