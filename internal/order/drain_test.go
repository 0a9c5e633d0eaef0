package order_test

import (
	"context"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/order"
)

func TestDrainReleasesWaits(t *testing.T) {
	e := newEnv(t)
	o := e.place(t, "c")
	done := make(chan order.Order, 1)
	go func() {
		got, err := e.svc.Wait(context.Background(), o.ID, 5*time.Second)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- got
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	e.svc.Drain()
	select {
	case got := <-done:
		if got.Status != order.Pending || got.ID != o.ID {
			t.Errorf("Wait after Drain: got (%s, %s), want the PENDING order %s", got.ID, got.Status, o.ID)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("Wait returned %s after Drain, want at once", took)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Wait did not return after Drain")
	}

	// A Wait that starts after Drain answers at once; Drain is idempotent.
	e.svc.Drain()
	start = time.Now()
	if got, err := e.svc.Wait(context.Background(), o.ID, 5*time.Second); err != nil || got.Status != order.Pending {
		t.Errorf("Wait after Drain: got (%s, %v), want PENDING", got.Status, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Wait after Drain took %s, want at once", took)
	}
}
