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
	res, err := tx.ExecContext(ctx, `INSERT INTO inbox (consumer, event_id, event_type, applied_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		consumer, e.ID, string(e.Type), time.Now().UnixMicro())
	if err != nil {
		return false, fmt.Errorf("inbox claim %s %s: %w", e.Type, e.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inbox claim %s %s: %w", e.Type, e.ID, err)
	}
	return n == 1, nil
}
