package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/convergehq/converge/internal/store"
)

// Retention is how long a published row stays in the outbox: far longer
// than the broker's 2-minute duplicate window, so a row is never gone while
// a republish of it could still matter, and long enough to look into.
const Retention = 24 * time.Hour

// Prune deletes the rows published before before. Unpublished rows are
// never deleted. It returns how many rows went.
func Prune(ctx context.Context, db *store.DB, before time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1`, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("outbox prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("outbox prune: %w", err)
	}
	return n, nil
}
