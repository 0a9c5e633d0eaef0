package broker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Message is an event to publish.
type Message struct {
	ID      string // becomes Nats-Msg-Id so the broker drops a duplicate inside its window
	Subject string
	Data    []byte
	Header  map[string]string // extra headers (e.g. traceparent, ce-type)
}

// PublishBatch publishes msgs and returns nil only once every one of them
// has been stored (a duplicate counts as stored). On error some messages
// may have been stored; resending the whole batch is safe because of the
// message IDs.
func (c *Conn) PublishBatch(ctx context.Context, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	nms := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		// Without an ID a resend after a lost PubAck would duplicate the event.
		if m.ID == "" {
			return fmt.Errorf("publish %s: message has no ID", m.Subject)
		}
		h := make(nats.Header, len(m.Header)+1)
		for k, v := range m.Header {
			h.Set(k, v)
		}
		h.Set(jetstream.MsgIDHeader, m.ID)
		nms[i] = &nats.Msg{Subject: m.Subject, Data: m.Data, Header: h}
	}
	var failed int
	var first error
	for _, err := range c.publishAll(ctx, nms) {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("publish batch: %d of %d messages not acknowledged: %w", failed, len(msgs), first)
	}
	return nil
}

// publishAll publishes every message without waiting in between, so the
// server's fsyncs overlap, then collects one result per message.
func (c *Conn) publishAll(ctx context.Context, msgs []*nats.Msg) []error {
	errs := make([]error, len(msgs))
	failAll := func(err error) []error {
		for i, m := range msgs {
			errs[i] = fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return failAll(err)
	}
	// While disconnected nats.go parks publishes in its reconnect buffer and
	// we would only find out at the timeout; fail now so the caller's retry
	// loop sees the outage promptly.
	if !c.nc.IsConnected() {
		return failAll(nats.ErrDisconnected)
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()

	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", m.Subject, err)
			continue
		}
		futures[i] = f
	}
	// Futures left behind on timeout are not leaked: nats.go expires them
	// after publishTimeout (WithPublishAsyncTimeout) or on reconnect.
	for i, f := range futures {
		if f == nil {
			continue
		}
		if err := awaitAck(ctx, f); err != nil {
			errs[i] = fmt.Errorf("publish %s: %w", msgs[i].Subject, err)
		}
	}
	return errs
}

func awaitAck(ctx context.Context, f jetstream.PubAckFuture) error {
	// Look at the result first so an ack that already arrived is not
	// reported as a timeout just because ctx expired meanwhile.
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	default:
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return fmt.Errorf("waiting for ack: %w", ctx.Err())
	}
}
