package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// About finds the events an outbox holds, and those an inbox applied,
// about one subject (an order), on both engines.
func TestAbout(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		ctx := context.Background()
		db := openDBAt(t, storetest.URL(t, engine, "svc"))
		var sent []events.Envelope
		for _, ev := range []struct {
			typ     events.Type
			subject string
		}{{events.OrderCreated, "o1"}, {events.OrderCreated, "o2"}, {events.OrderCancelled, "o1"}} {
			e, err := events.New("converge/test", ev.typ, ev.subject, events.OrderCancelledData{OrderID: ev.subject}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, e)
		}
		err := db.InTx(ctx, func(tx *store.Tx) error {
			for _, e := range sent {
				if err := outbox.Add(ctx, tx, e); err != nil {
					return err
				}
			}
			_, err := inbox.Claim(ctx, tx, "c", sent[1]) // about o2
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		published := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := db.ExecContext(ctx, `UPDATE outbox SET published_at = $1 WHERE event_id = $2`, published.UnixMicro(), sent[0].ID); err != nil {
			t.Fatal(err)
		}

		got, err := outbox.About(ctx, db, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].EventID != sent[0].ID || got[1].EventID != sent[2].ID ||
			got[1].Type != events.OrderCancelled || got[0].CreatedAt.IsZero() {
			t.Fatalf("outbox about o1: %+v, want %s then %s", got, sent[0].ID, sent[2].ID)
		}
		if !got[0].PublishedAt.Equal(published) || !got[1].PublishedAt.IsZero() {
			t.Errorf("published at %s and %s, want %s and none", got[0].PublishedAt, got[1].PublishedAt, published)
		}

		applied, err := inbox.About(ctx, db, "c", "o2")
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != 1 || applied[0].EventID != sent[1].ID || applied[0].AppliedAt.IsZero() {
			t.Errorf("inbox about o2: %+v, want %s", applied, sent[1].ID)
		}
		if none, err := inbox.About(ctx, db, "other", "o2"); err != nil || len(none) != 0 {
			t.Errorf("another consumer's inbox about o2: %+v, %v; want nothing", none, err)
		}
	})
}
