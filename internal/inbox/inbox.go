// Package inbox answers "has this consumer applied this event already?"
// inside the transaction that applies it, which makes at-least-once delivery
// behave as exactly-once effects.
package inbox

import (
	"context"
	"embed"
	"fmt"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations is the inbox table's schema, for store.DB.Migrate.
func Migrations() store.Migrations {
	return store.Migrations{Component: "inbox", FS: migrations}
}

// Claim records that consumer applies e in tx. It returns false when the
// event was applied before: the caller then does nothing (and the
// transaction may still commit, harmlessly).
func Claim(ctx context.Context, tx *store.Tx, consumer string, e events.Envelope) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO inbox (consumer, event_id, event_type, event_subject, applied_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		consumer, e.ID, string(e.Type), e.Subject, time.Now().UnixMicro())
	if err != nil {
		return false, fmt.Errorf("inbox claim %s %s: %w", e.Type, e.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox claim %s %s: %w", e.Type, e.ID, err)
	}
	return n == 1, nil
}

// Entry is an event a consumer applied.
type Entry struct {
	EventID   string
	Type      events.Type
	AppliedAt time.Time // in the transaction that applied it
}

// About returns the events consumer applied whose subject is subject, in
// the order they were applied. Rows go after inbox.Retention.
func About(ctx context.Context, db *store.DB, consumer, subject string) ([]Entry, error) {
	rows, err := db.QueryContext(ctx, `SELECT event_id, event_type, applied_at FROM inbox
		WHERE event_subject = $1 AND consumer = $2 ORDER BY applied_at`, subject, consumer)
	if err != nil {
		return nil, fmt.Errorf("inbox events about %s: %w", subject, err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e       Entry
			typ     string
			applied int64
		)
		if err := rows.Scan(&e.EventID, &typ, &applied); err != nil {
			return nil, fmt.Errorf("inbox events about %s: %w", subject, err)
		}
		e.Type, e.AppliedAt = events.Type(typ), time.UnixMicro(applied).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("inbox events about %s: %w", subject, err)
	}
	return out, nil
}
