package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// BenchmarkPublishBatch measures durable publishing (fsync on every write)
// through PublishBatch; ns/op is per message.
func BenchmarkPublishBatch(b *testing.B) {
	for _, size := range []int{1, 2, 8, 16, 32, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := brokertest.Start(b)
			ctx := context.Background()
			c, err := broker.Connect(ctx, s.ClientURL(), "bench", brokertest.Logger(b))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.EnsureStream(ctx, broker.StreamConfig{Name: "B", Subjects: []string{"b.>"}}); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 400)
			b.ResetTimer()
			for i := 0; i < b.N; i += size {
				msgs := make([]broker.Message, min(size, b.N-i))
				for j := range msgs {
					msgs[j] = broker.Message{ID: fmt.Sprint("m-", i+j), Subject: "b.x", Data: payload}
				}
				if err := c.PublishBatch(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
