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
	_, err = tx.ExecContext(ctx, `INSERT INTO outbox (event_id, event_type, subject, payload, traceparent, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		e.ID, string(e.Type), e.BrokerSubject(), payload, e.TraceParent, time.Now().UnixMicro())
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
