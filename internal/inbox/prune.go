package inbox

import (
	"context"
	"fmt"
	"time"

	"github.com/convergehq/converge/internal/store"
)

// Retention is how long the inbox remembers an applied event. A
// redelivery comes within minutes (the broker's retries end in the
// dead-letter stream after about two); a week also covers a dead letter
// replayed by an operator days later. An event older than this that came
// again would be applied again, where the services' own state checks (a
// decided reservation, a final order) are the last guard.
const Retention = 7 * 24 * time.Hour

// Prune deletes what was applied before before. It returns how many rows
// went.
func Prune(ctx context.Context, db *store.DB, before time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM inbox WHERE applied_at < $1`, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("inbox prune: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("inbox prune: %w", err)
	}
	return n, nil
}
