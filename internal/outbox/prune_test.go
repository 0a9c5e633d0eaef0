package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// Prune deletes published rows older than the cut-off, and never an
// unpublished one, however old.
func TestPrune(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		ctx := context.Background()
		db := openDBAt(t, storetest.URL(t, engine, "svc"))
		es := newEvents(t, 3, "prune")
		add(t, db, es)
		old := time.Now().Add(-48 * time.Hour).UnixMicro()
		for _, q := range []struct {
			id        string
			published any
		}{{es[0].ID, old}, {es[1].ID, time.Now().UnixMicro()}, {es[2].ID, nil}} {
			if _, err := db.ExecContext(ctx, `UPDATE outbox SET published_at = $1, created_at = $2 WHERE event_id = $3`, q.published, old, q.id); err != nil {
				t.Fatal(err)
			}
		}
		n, err := outbox.Prune(ctx, db, time.Now().Add(-outbox.Retention))
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("pruned %d rows, want 1 (the one published two days ago)", n)
		}
		var left int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left != 2 || unpublished(t, db) != 1 {
			t.Fatalf("after prune: %d rows, %d unpublished; want 2 and 1", left, unpublished(t, db))
		}
	})
}
