package order_test

import (
	"context"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
)

// readCounter tells of every Get outside a transaction, once it has read.
type readCounter struct {
	order.Store
	gets chan string
}

func (r readCounter) Get(ctx context.Context, id string) (order.Order, error) {
	o, err := r.Store.Get(ctx, id)
	r.gets <- id
	return o, err
}

// A Wait that a commit of this process answers (a reply applied, a cancel)
// gets the order as the commit left it, with no second read, and that is
// the order the database holds; a move it is only woken for (another
// instance's) it reads.
func TestWaitTakesTheOrderFromTheCommit(t *testing.T) {
	e := newEnv(t)
	reads := readCounter{Store: e.store, gets: make(chan string, 16)}
	svc := order.NewService(reads, func() {}, slog.New(slog.DiscardHandler))
	order.SetWaitPoll(svc, time.Hour) // only a commit or a wake ends a Wait here
	deadline := time.After(5 * time.Second)
	waitFor := func(what string, ch <-chan string) string {
		t.Helper()
		select {
		case v := <-ch:
			return v
		case <-deadline:
			t.Fatalf("stuck: %s", what)
			return ""
		}
	}
	// wait starts a Wait on a new order and returns it once the Wait has
	// read the order PENDING (it watches from before that read).
	wait := func(customer string) (order.Order, <-chan order.Order) {
		t.Helper()
		placed, _, err := svc.Place(context.Background(), order.PlaceInput{CustomerID: customer, Items: []order.Item{{SKU: "A", Quantity: 1}}}, "", "")
		if err != nil {
			t.Fatal(err)
		}
		waited := make(chan order.Order, 1)
		go func() {
			o, err := svc.Wait(context.Background(), placed.ID, 5*time.Second)
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			waited <- o
		}()
		waitFor("Wait's first read", reads.gets)
		return placed, waited
	}

	for _, tc := range []struct {
		name   string
		commit func(id string) error
		want   order.Status
	}{
		{"reserved", func(id string) error {
			return svc.ApplyBatch(context.Background(), []events.Envelope{reserved(t, id)})[0]
		}, order.Confirmed},
		{"rejected", func(id string) error {
			return svc.ApplyBatch(context.Background(), []events.Envelope{rejected(t, id, events.ReasonInsufficientStock)})[0]
		}, order.Rejected},
		{"cancelled", func(id string) error {
			_, _, err := svc.Cancel(context.Background(), id, "")
			return err
		}, order.Cancelled},
	} {
		placed, waited := wait(tc.name)
		if err := tc.commit(placed.ID); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got order.Order
		select {
		case got = <-waited:
		case <-deadline:
			t.Fatalf("stuck: Wait on a %s order", tc.name)
		}
		select {
		case id := <-reads.gets:
			t.Errorf("%s: Wait read order %s again after the commit that moved it", tc.name, id)
		default:
		}
		stored, err := e.store.Get(context.Background(), placed.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != tc.want || !reflect.DeepEqual(got, stored) {
			t.Errorf("%s: Wait answered %+v, the database holds %+v (want status %s)", tc.name, got, stored, tc.want)
		}
	}

	// Woken for a change made elsewhere, Wait reads the order.
	placed, waited := wait("elsewhere")
	if errs := e.svc.ApplyBatch(context.Background(), []events.Envelope{reserved(t, placed.ID)}); errs[0] != nil {
		t.Fatalf("ApplyBatch on the other instance: %v", errs[0])
	}
	svc.Wake(placed.ID)
	waitFor("Wait's read after the wake", reads.gets)
	select {
	case got := <-waited:
		if got.Status != order.Confirmed {
			t.Errorf("Wait after a wake: got %s, want CONFIRMED", got.Status)
		}
	case <-deadline:
		t.Fatal("stuck: Wait after a wake")
	}
}
