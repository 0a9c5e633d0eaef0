package order_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
)

// BenchmarkPlace measures accepting an order on SQLite: stored PENDING with
// its order.created outbox row in one transaction. "serial" is one caller
// at a time, one commit per order; "parallel" has 16 callers per CPU, whose
// orders the placer groups into shared transactions (group commit).
func BenchmarkPlace(b *testing.B) {
	in := order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 2}}}
	b.Run("serial", func(b *testing.B) {
		e := newEnv(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := e.svc.Place(ctx, in, "", trace); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	})
	b.Run("parallel", func(b *testing.B) {
		e := newEnv(b)
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := e.svc.Place(ctx, in, "", trace); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "orders/s")
	})
}

// BenchmarkApplyBatch measures applying inventory.reserved replies to
// PENDING orders, a batch per transaction (inbox claim, read, status
// guard); ns/op is per batch, ns/event per reply.
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			ids := pending(b, e, b.N*size)
			batches := make([][]events.Envelope, b.N)
			for i := range batches {
				for _, id := range ids[i*size : (i+1)*size] {
					batches[i] = append(batches[i], reserved(b, id))
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				for _, err := range e.svc.ApplyBatch(ctx, batches[i]) {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
		})
	}
}

// pending stores n PENDING orders in one transaction, without events: the
// replies' setup, not what is measured.
func pending(tb testing.TB, e *env, n int) []string {
	tb.Helper()
	ids := make([]string, n)
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := e.store.Update(context.Background(), func(tx order.Tx) error {
		for i := range ids {
			ids[i] = uuid.Must(uuid.NewV7()).String()
			o := order.Order{ID: ids[i], CustomerID: "c", Status: order.Pending,
				Items: []order.Item{{SKU: "A", Quantity: 1}}, CreatedAt: now, UpdatedAt: now}
			if err := tx.Create(context.Background(), o, now, "", ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("create %d pending orders: %v", n, err)
	}
	return ids
}
