package broker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// The bite test for PublishBatch: when some messages of a batch are stored
// and others are not, the batch fails and says how many were not.
func TestPublishBatchReportsPartialFailure(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	batch := []broker.Message{
		{ID: "a", Subject: "orders.created", Data: []byte("a")},
		{ID: "b", Subject: "nostream.created", Data: []byte("b")}, // no stream captures it
		{ID: "c", Subject: "orders.created", Data: []byte("c")},
	}
	err := c.PublishBatch(t.Context(), batch)
	if err == nil {
		t.Fatal("PublishBatch with a message no stream stores: got nil, want an error")
	}
	if !strings.Contains(err.Error(), "1 of 3 messages not acknowledged") {
		t.Errorf("PublishBatch error: got %q, want it to say 1 of 3 messages not acknowledged", err)
	}
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("PublishBatch error: got %v, want it to wrap the no-stream error", err)
	}
	if got := streamMsgs(t, c, eventsStream); got != 2 {
		t.Errorf("stream messages: got %d, want the 2 that were acknowledged", got)
	}
}
