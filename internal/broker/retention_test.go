package broker_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// A stream made with limits retention (as converge made them before) is
// moved to interest retention in place, keeping its messages.
func TestEnsureStreamMovesToInterest(t *testing.T) {
	s := brokertest.Start(t)
	c, err := broker.Connect(context.Background(), s.ClientURL(), "retention-test", brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	if err := c.EnsureStream(ctx, broker.StreamConfig{Name: "R", Subjects: []string{"r.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishBatch(ctx, []broker.Message{{ID: "1", Subject: "r.x", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureStream(ctx, broker.StreamConfig{Name: "R", Subjects: []string{"r.>"}, Interest: true, MaxBytes: 1 << 20}); err != nil {
		t.Fatalf("move to interest retention: %v", err)
	}
	st, err := c.JetStream().Stream(ctx, "R")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Retention != jetstream.InterestPolicy || info.Config.Discard != jetstream.DiscardNew {
		t.Fatalf("retention %v discard %v, want interest and discard new", info.Config.Retention, info.Config.Discard)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages after the move, want 1", info.State.Msgs)
	}
}
