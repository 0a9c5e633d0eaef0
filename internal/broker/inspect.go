package broker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerState is what the server reports of a durable consumer's
// progress. All instances of a service share the consumer, so each sees the
// same figures.
type ConsumerState struct {
	Pending     uint64 // messages of the stream the consumer has not been sent yet
	AckPending  uint64 // sent and not yet acknowledged
	Redelivered uint64 // sent more than once and not yet acknowledged
}

// ConsumerState asks the server how far the durable consumer of stream has
// got.
// A disconnected client answers at once, without waiting for ctx.
func (c *Conn) ConsumerState(ctx context.Context, stream, durable string) (ConsumerState, error) {
	if !c.nc.IsConnected() {
		return ConsumerState{}, fmt.Errorf("consumer %s/%s: %w", stream, durable, nats.ErrDisconnected)
	}
	cons, err := c.js.Consumer(ctx, stream, durable)
	if err != nil {
		return ConsumerState{}, fmt.Errorf("consumer %s/%s: %w", stream, durable, err)
	}
	// Consumer has just fetched the info; asking again would cost a round trip.
	info := cons.CachedInfo()
	return ConsumerState{
		Pending:     info.NumPending,
		AckPending:  uint64(max(info.NumAckPending, 0)),
		Redelivered: uint64(max(info.NumRedelivered, 0)),
	}, nil
}

// SubjectMessages counts the messages stream holds under subject (no
// wildcards): for one consumer's dead letters, say. A disconnected client
// answers at once.
func (c *Conn) SubjectMessages(ctx context.Context, stream, subject string) (uint64, error) {
	if !c.nc.IsConnected() {
		return 0, fmt.Errorf("stream %s: %w", stream, nats.ErrDisconnected)
	}
	st, err := c.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("stream %s, subject %s: %w", stream, subject, err)
	}
	return info.State.Subjects[subject], nil
}

// DeadLetters is the subject the consumer cfg describes sends its dead
// letters to.
func (cfg ConsumerConfig) DeadLetters() string {
	if cfg.DeadLetterSubject != "" {
		return cfg.DeadLetterSubject
	}
	return DeadLetterPrefix + cfg.Durable
}
