package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/convergehq/converge/internal/outbox"
)

// BenchmarkRelayRound measures one relay round against an embedded broker
// (fsync on every write): read a batch of unpublished rows, publish it,
// mark it published. The rows are added with the timer stopped. ns/op is
// per round, ns/event per row.
func BenchmarkRelayRound(b *testing.B) {
	for _, size := range []int{1, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			db := openDB(b)
			_, c := startBroker(b)
			r := outbox.NewRelay(db, c, slog.New(slog.DiscardHandler), outbox.RelayConfig{Batch: size})
			ctx := context.Background()
			if _, err := outbox.Round(ctx, r); err != nil { // takes the lease
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				add(b, db, newEvents(b, size, fmt.Sprint("bench-", i)))
				b.StartTimer()
				n, err := outbox.Round(ctx, r)
				if err != nil {
					b.Fatal(err)
				}
				if n != size {
					b.Fatalf("round %d published %d rows, want %d", i, n, size)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/event")
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
