package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/store"
)

// batchEnv applies events by claiming them and recording their id in an
// "applied" table; events listed in fail return errFail after claiming.
type batchEnv struct {
	db      *store.DB
	updates int // transactions begun through update
	fail    map[string]bool
}

var errFail = errors.New("apply failed")

func newBatchEnv(t testing.TB) *batchEnv {
	t.Helper()
	db := openDB(t)
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE applied (event_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return &batchEnv{db: db, fail: map[string]bool{}}
}

func (b *batchEnv) update(ctx context.Context, fn func(*store.Tx) error) error {
	b.updates++
	return b.db.InTx(ctx, fn)
}

func (b *batchEnv) apply(ctx context.Context, tx *store.Tx, e events.Envelope) error {
	fresh, err := inbox.Claim(ctx, tx, "test", e)
	if err != nil || !fresh {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO applied (event_id) VALUES ($1)`, e.ID); err != nil {
		return err
	}
	if b.fail[e.ID] {
		return fmt.Errorf("%w: %s", errFail, e.ID)
	}
	return nil
}

func (b *batchEnv) run(es []events.Envelope) []error {
	return inbox.ApplyBatch(context.Background(), b.update, es, b.apply)
}

// applied returns the ids in the applied table, in insertion order.
func (b *batchEnv) applied(t testing.TB) []string {
	t.Helper()
	rows, err := b.db.QueryContext(context.Background(), `SELECT event_id FROM applied ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

func eventIDs(es ...events.Envelope) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestApplyBatchOneTransaction(t *testing.T) {
	b := newBatchEnv(t)
	es := []events.Envelope{newEvent(t), newEvent(t), newEvent(t)}
	errs := b.run(es)
	if len(errs) != len(es) || slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		t.Fatalf("ApplyBatch: got %v, want %d nil errors", errs, len(es))
	}
	if b.updates != 1 {
		t.Errorf("transactions: got %d, want 1 for the whole batch", b.updates)
	}
	if got, want := b.applied(t), eventIDs(es...); !slices.Equal(got, want) {
		t.Errorf("applied: got %v, want %v", got, want)
	}
	if n := rows(t, b.db); n != 3 {
		t.Errorf("inbox rows: got %d, want 3", n)
	}

	// A redelivered batch, mixed with a new event and a repeat inside the
	// batch, applies only the new event, once.
	fresh := newEvent(t)
	errs = b.run([]events.Envelope{es[1], fresh, es[0], fresh})
	if slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		t.Fatalf("ApplyBatch(redelivery): got %v, want no errors", errs)
	}
	if got, want := b.applied(t), eventIDs(es[0], es[1], es[2], fresh); !slices.Equal(got, want) {
		t.Errorf("applied after the redelivery: got %v, want %v", got, want)
	}
}

func TestApplyBatchIsolatesAFailure(t *testing.T) {
	b := newBatchEnv(t)
	es := []events.Envelope{newEvent(t), newEvent(t), newEvent(t), newEvent(t)}
	b.fail[es[2].ID] = true
	errs := b.run(es)
	if len(errs) != len(es) {
		t.Fatalf("ApplyBatch: got %d errors, want %d", len(errs), len(es))
	}
	for i, err := range errs {
		if i == 2 {
			if !errors.Is(err, errFail) {
				t.Errorf("errs[2]: got %v, want an error wrapping %v", err, errFail)
			}
			continue
		}
		if err != nil {
			t.Errorf("errs[%d]: got %v, want nil (one bad event fails alone)", i, err)
		}
	}
	if b.updates != 1+len(es) {
		t.Errorf("transactions: got %d, want %d (the failed batch, then one per event)", b.updates, 1+len(es))
	}
	if got, want := b.applied(t), eventIDs(es[0], es[1], es[3]); !slices.Equal(got, want) {
		t.Errorf("applied: got %v, want %v (the failed event rolled back, the others once)", got, want)
	}
	if n := rows(t, b.db); n != 3 {
		t.Errorf("inbox rows: got %d, want 3 (no claim kept for the failed event)", n)
	}

	// Once fixed, the failed event applies on redelivery.
	delete(b.fail, es[2].ID)
	if errs := b.run(es[2:3]); errs[0] != nil {
		t.Errorf("redelivery of the failed event: %v", errs[0])
	}
	if got, want := b.applied(t), eventIDs(es[0], es[1], es[3], es[2]); !slices.Equal(got, want) {
		t.Errorf("applied: got %v, want %v", got, want)
	}
}

func TestApplyBatchSingleFailure(t *testing.T) {
	b := newBatchEnv(t)
	e := newEvent(t)
	b.fail[e.ID] = true
	errs := b.run([]events.Envelope{e})
	if len(errs) != 1 || !errors.Is(errs[0], errFail) {
		t.Fatalf("ApplyBatch: got %v, want one error wrapping %v", errs, errFail)
	}
	if b.updates != 1 {
		t.Errorf("transactions: got %d, want 1 (no retry of a batch of one)", b.updates)
	}
	if n := rows(t, b.db); n != 0 {
		t.Errorf("inbox rows: got %d, want 0", n)
	}
}

func TestApplyBatchAllFail(t *testing.T) {
	b := newBatchEnv(t)
	es := []events.Envelope{newEvent(t), newEvent(t)}
	for _, e := range es {
		b.fail[e.ID] = true
	}
	errs := b.run(es)
	for i, err := range errs {
		if !errors.Is(err, errFail) {
			t.Errorf("errs[%d]: got %v, want an error wrapping %v", i, err, errFail)
		}
	}
	if n := len(b.applied(t)); n != 0 {
		t.Errorf("applied: got %d, want 0", n)
	}
}

func TestApplyBatchEmpty(t *testing.T) {
	b := newBatchEnv(t)
	if errs := b.run(nil); len(errs) != 0 {
		t.Errorf("ApplyBatch(nil): got %v, want no errors", errs)
	}
	if b.updates != 0 {
		t.Errorf("transactions: got %d, want 0", b.updates)
	}
}
