package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/inbox"
)

// Prune deletes what was applied before the cut-off and keeps the rest.
func TestPrune(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	old := time.Now().Add(-8 * 24 * time.Hour).UnixMicro()
	for i, at := range []int64{old, time.Now().UnixMicro()} {
		if _, err := db.ExecContext(ctx, `INSERT INTO inbox (consumer, event_id, event_type, applied_at) VALUES ('c', $1, 't', $2)`, string(rune('a'+i)), at); err != nil {
			t.Fatal(err)
		}
	}
	n, err := inbox.Prune(ctx, db, time.Now().Add(-inbox.Retention))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || rows(t, db) != 1 {
		t.Fatalf("pruned %d, %d left; want 1 and 1", n, rows(t, db))
	}
}
