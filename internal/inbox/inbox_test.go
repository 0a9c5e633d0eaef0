package inbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

func openDB(t testing.TB) *store.DB {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, "inbox")
	if err := db.Migrate(ctx, inbox.Migrations()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return db
}

func newEvent(t testing.TB) events.Envelope {
	t.Helper()
	e, err := events.New("converge/test", events.StockReserved, "o1", events.StockReservedData{OrderID: "o1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// claim runs Claim in its own committed transaction.
func claim(t testing.TB, db *store.DB, consumer string, e events.Envelope) bool {
	t.Helper()
	var fresh bool
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		fresh, err = inbox.Claim(context.Background(), tx, consumer, e)
		return err
	})
	if err != nil {
		t.Fatalf("Claim(%s, %s): %v", consumer, e.ID, err)
	}
	return fresh
}

func rows(t testing.TB, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM inbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestClaim(t *testing.T) {
	db := openDB(t)
	e1, e2 := newEvent(t), newEvent(t)
	steps := []struct {
		consumer string
		e        events.Envelope
		want     bool
		rows     int
	}{
		{"order", e1, true, 1},
		{"order", e1, false, 1},
		{"order", e1, false, 1},
		{"inventory", e1, true, 2}, // per consumer
		{"inventory", e1, false, 2},
		{"order", e2, true, 3},
		{"inventory", e2, true, 4},
		{"order", e2, false, 4},
	}
	for i, s := range steps {
		if got := claim(t, db, s.consumer, s.e); got != s.want {
			t.Errorf("step %d: Claim(%s, %s): got %v, want %v", i, s.consumer, s.e.ID, got, s.want)
		}
		if got := rows(t, db); got != s.rows {
			t.Errorf("step %d: inbox rows: got %d, want %d", i, got, s.rows)
		}
	}
}

func TestClaimTwiceInOneTx(t *testing.T) {
	db := openDB(t)
	e := newEvent(t)
	var first, second bool
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		if first, err = inbox.Claim(context.Background(), tx, "order", e); err != nil {
			return err
		}
		second, err = inbox.Claim(context.Background(), tx, "order", e)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !first || second {
		t.Errorf("Claim twice in one tx: got %v then %v, want true then false", first, second)
	}
}

func TestRolledBackClaimIsForgotten(t *testing.T) {
	db := openDB(t)
	e := newEvent(t)
	errApply := errors.New("apply failed")
	var fresh bool
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		var err error
		if fresh, err = inbox.Claim(context.Background(), tx, "order", e); err != nil {
			return err
		}
		return errApply
	})
	if !errors.Is(err, errApply) {
		t.Fatalf("InTx: got %v, want %v", err, errApply)
	}
	if !fresh {
		t.Errorf("Claim in the rolled-back tx: got false, want true")
	}
	if got := rows(t, db); got != 0 {
		t.Errorf("inbox rows after rollback: got %d, want 0", got)
	}
	if got := claim(t, db, "order", e); !got {
		t.Errorf("Claim after a rolled-back claim: got false, want true")
	}
	if got := claim(t, db, "order", e); got {
		t.Errorf("Claim after a committed claim: got true, want false")
	}
}

func TestClaimRecordsType(t *testing.T) {
	db := openDB(t)
	e := newEvent(t)
	claim(t, db, "order", e)
	var consumer, id, typ string
	var at int64
	if err := db.QueryRowContext(context.Background(), `SELECT consumer, event_id, event_type, applied_at FROM inbox`).Scan(&consumer, &id, &typ, &at); err != nil {
		t.Fatal(err)
	}
	if consumer != "order" || id != e.ID || typ != string(e.Type) || at <= 0 {
		t.Errorf("inbox row: got (%s, %s, %s, %d), want (order, %s, %s, >0)", consumer, id, typ, at, e.ID, e.Type)
	}
}
