package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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
// message IDs. Messages are stored in the order given when nothing fails;
// after a failure the resend can store a failed message after a later one
// of a short run (single publishes in flight together), which consumers
// must tolerate, as they tolerate redeliveries.
//
// Runs of at least minAtomicBatch (8) consecutive messages bound for the same
// stream go as one atomic batch (nats-server 2.12 and later, on a stream
// made by EnsureStream): the server stages them and stores them together,
// with a few fsyncs for the whole batch instead of one per message, and in
// the order given. Shorter runs go as pipelined single publishes. A batch
// the server refuses as a whole (it holds a message the stream already
// has, after a resend; a message the stream refuses; a server or stream
// without atomic publish) is sent again one message at a time, where a
// duplicate is dropped alone and a bad message fails alone.
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
	for _, err := range c.publishRuns(ctx, nms) {
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

// maxAtomicBatch is the most messages one atomic batch carries: the
// server's default limit (max_batch_size).
const maxAtomicBatch = 1000

// minAtomicBatch is the fewest messages sent as an atomic batch. The server
// stages a batch in files of its own before storing it, a fixed cost of a
// few fsyncs and a directory made and removed, where pipelined single
// publishes cost an fsync each. Alone on the machine the single publishes
// of up to about 30 messages are quicker (BenchmarkPublishBatch); inside
// the running system, whose SQLite commits and HTTP work share the disk
// and the cores, batches of 8 or more do better atomic: order -> final at
// 1,000 orders/s offered fell from p50 52-57 ms, p99 93-96 ms (threshold
// 32) to 37-42 ms and 66-77 ms (threshold 8), three runs each, throughput
// unchanged (README, "Measured").
const minAtomicBatch = 8

// Headers of an atomic batch publish.
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// streamLookupTimeout bounds the wait for a subject's stream: without a
// meta leader the request goes unanswered, and the messages can still be
// published one by one.
const streamLookupTimeout = 2 * time.Second

// publishRuns cuts msgs into runs of consecutive messages for one stream,
// publishes each run of at least minAtomicBatch as an atomic batch and the
// others one by one, and returns one result per message.
func (c *Conn) publishRuns(ctx context.Context, msgs []*nats.Msg) []error {
	if err := c.publishable(ctx); err != nil {
		return failAll(msgs, err)
	}
	if len(msgs) < minAtomicBatch {
		return c.publishAll(ctx, msgs) // too few for a batch: no stream name needed
	}
	// Each message's stream. The answer comes from the meta leader, which a
	// cluster can be without for a while (an election after a restart)
	// while the stream leaders still take publishes: from the first
	// message whose stream cannot be looked up on, the messages go one by
	// one, as they would to no known stream.
	streams := make([]string, len(msgs))
	seen := map[string]string{} // this call's answers, "no stream" included
	for i, m := range msgs {
		s, ok := seen[m.Subject]
		if !ok {
			var err error
			if s, err = c.streamOf(ctx, m.Subject); err != nil {
				c.log.Warn("stream lookup failed; publishing one by one", "subject", m.Subject, "messages", len(msgs)-i, "err", err)
				break
			}
			seen[m.Subject] = s
		}
		streams[i] = s
	}
	errs := make([]error, 0, len(msgs))
	for start := 0; start < len(streams); {
		end := start + 1
		for end < len(streams) && end-start < maxAtomicBatch && streams[end] == streams[start] {
			end++
		}
		errs = append(errs, c.publishRun(ctx, streams[start], msgs[start:end])...)
		start = end
	}
	return errs
}

// publishRun publishes msgs, all bound for stream, as one atomic batch, or
// one by one when that cannot be.
func (c *Conn) publishRun(ctx context.Context, stream string, msgs []*nats.Msg) []error {
	if stream == "" || len(msgs) < minAtomicBatch {
		return c.publishAll(ctx, msgs) // no stream (each fails on its own), or too few
	}
	err := c.publishAtomic(ctx, msgs)
	if err == nil {
		return make([]error, len(msgs))
	}
	if _, refused := errors.AsType[*jetstream.APIError](err); !refused {
		return failAll(msgs, err) // the connection or a timeout: retry later
	}
	c.log.Debug("atomic batch refused; publishing its messages one by one", "stream", stream, "messages", len(msgs), "err", err)
	return c.publishAll(ctx, msgs)
}

// publishAtomic sends msgs as one atomic batch and waits for the commit's
// PubAck. Only the commit asks for a reply: the server answers it with the
// batch's result, an error if any message of it failed.
func (c *Conn) publishAtomic(ctx context.Context, msgs []*nats.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	id := nuid.Next()
	for i, m := range msgs {
		bm := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: maps.Clone(m.Header)}
		bm.Header.Set(headerBatchID, id)
		bm.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := c.nc.PublishMsg(bm); err != nil {
				return fmt.Errorf("publish %s: %w", m.Subject, err)
			}
			continue
		}
		bm.Header.Set(headerBatchCommit, "1")
		if _, err := c.js.PublishMsg(ctx, bm); err != nil {
			return fmt.Errorf("commit batch of %d on %s: %w", len(msgs), m.Subject, err)
		}
	}
	return nil
}

// streamOf names the stream that stores subject, "" if none does. Answers
// are kept: a subject does not move between streams.
func (c *Conn) streamOf(ctx context.Context, subject string) (string, error) {
	c.streamsMu.Lock()
	name, ok := c.streams[subject]
	c.streamsMu.Unlock()
	if ok {
		return name, nil
	}
	ctx, cancel := context.WithTimeout(ctx, streamLookupTimeout)
	defer cancel()
	name, err := c.js.StreamNameBySubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "", nil // not kept: the stream may be made later
	case err != nil:
		return "", fmt.Errorf("which stream stores %s: %w", subject, err)
	}
	c.streamsMu.Lock()
	if c.streams == nil {
		c.streams = make(map[string]string)
	}
	c.streams[subject] = name
	c.streamsMu.Unlock()
	return name, nil
}

// publishable fails fast when the context is done or the connection is
// down: while disconnected nats.go parks publishes in its reconnect buffer
// and we would only find out at the timeout, while the caller's retry loop
// should see the outage promptly.
func (c *Conn) publishable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !c.nc.IsConnected() {
		return nats.ErrDisconnected
	}
	return nil
}

func failAll(msgs []*nats.Msg, err error) []error {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		errs[i] = fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return errs
}

// publishAll publishes every message without waiting in between, so the
// server's fsyncs overlap, then collects one result per message.
func (c *Conn) publishAll(ctx context.Context, msgs []*nats.Msg) []error {
	if err := c.publishable(ctx); err != nil {
		return failAll(msgs, err)
	}
	errs := make([]error, len(msgs))
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
