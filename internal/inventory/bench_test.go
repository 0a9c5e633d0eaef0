package inventory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergehq/converge/internal/events"
)

// BenchmarkApplyBatch measures applying order.created events, a batch per
// transaction: locks, inbox claim, reservation of every item, and the
// inventory.reserved reply into the outbox. Stock never runs out, so every
// event takes the reserving path. ns/op is per batch, ns/event per event.
func BenchmarkApplyBatch(b *testing.B) {
	skus := []string{"A", "B", "C", "D"}
	for _, size := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			for _, sku := range skus {
				e.stock(b, sku, 1_000_000_000)
			}
			batches := make([][]events.Envelope, b.N)
			for i := range batches {
				for j := range size {
					batches[i] = append(batches[i], created(b, newOrderID(),
						events.Item{SKU: skus[j%len(skus)], Quantity: 1}, events.Item{SKU: skus[(j+1)%len(skus)], Quantity: 2}))
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
