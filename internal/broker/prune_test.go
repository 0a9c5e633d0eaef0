package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// PruneConsumed removes what every consumer acknowledged and nothing else:
// a message one consumer has not acknowledged stays for it.
func TestPruneConsumed(t *testing.T) {
	s := brokertest.Start(t)
	ctx := context.Background()
	c, err := broker.Connect(ctx, s.ClientURL(), "prune-test", brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.EnsureStream(ctx, broker.StreamConfig{Name: "P", Subjects: []string{"p.>"}, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.PruneConsumed(ctx, "P"); err != nil || n != 0 {
		t.Fatalf("prune of a stream without consumers: %d, %v; want 0, nil", n, err)
	}
	var msgs []broker.Message
	for i := range 10 {
		msgs = append(msgs, broker.Message{ID: string(rune('a' + i)), Subject: "p.x", Data: []byte("x")})
	}
	if err := c.PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	js := c.JetStream()
	// Two consumers: fast acknowledges all 10, slow the first 4.
	for durable, acks := range map[string]int{"fast": 10, "slow": 4} {
		cons, err := js.CreateOrUpdateConsumer(ctx, "P", jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(acks, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := c.PruneConsumed(ctx, "P")
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("pruned %d messages, want the 4 both consumers acknowledged", n)
	}
	st, err := js.Stream(ctx, "P")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 6 || info.State.FirstSeq != 5 {
		t.Fatalf("stream holds %d messages from seq %d, want 6 from 5", info.State.Msgs, info.State.FirstSeq)
	}
}
