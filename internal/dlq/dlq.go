// Package dlq operates the dead-letter stream: it lists, reads, replays and
// discards the copies that broker.Consume dead-letters (see the broker's
// Header* constants for what a copy carries). It knows nothing of orders
// or inventory: a dead letter is a message with its origin and its error.
//
// Replay publishes the original message again, with its original headers
// and payload, to its original subject, so that the consumer that gave up
// on it gets it again; only then is the dead letter deleted. The replay's
// Nats-Msg-Id is derived from the dead letter's sequence, so two replays of
// one dead letter inside the stream's duplicate window store one message;
// past it, the consumer's inbox (keyed by event id) makes the second a
// no-op. A dead letter is never deleted before its replay is acknowledged.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
)

// Errors callers tell apart.
var (
	ErrNotFound       = errors.New("dead letter not found")
	ErrInvalid        = errors.New("invalid request")
	ErrNotReplayable  = errors.New("dead letter cannot be replayed")
	ErrUnavailable    = errors.New("broker unavailable")
	errDeleteRejected = errors.New("delete rejected")
)

// HeaderReplayOf names, on a replayed message, the dead letter it came
// from ("DLQ/42"), so that logs and a later dead letter show its history.
const HeaderReplayOf = "Converge-Replay-Of"

// Limits of a page and of one bulk operation.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
	// maxScan bounds the messages one call reads, so that a filter that
	// matches little cannot make a request read the whole stream; the
	// page then ends early with a cursor to go on from.
	maxScan = 10_000
)

// Filter selects dead letters. Empty fields match everything.
type Filter struct {
	Consumer string // the durable consumer that gave up (the subject's last token)
	Type     string // the CloudEvents type of the message, exactly
	Reason   string // a piece of the error text, case-insensitive
	After    uint64 // only dead letters with a higher sequence (the page cursor)
	Limit    int    // at most this many; 0 = DefaultLimit
}

// Any reports whether f selects by consumer, type or reason.
func (f Filter) Any() bool { return f.Consumer != "" || f.Type != "" || f.Reason != "" }

func (f Filter) check() (Filter, error) {
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	if f.Limit < 1 || f.Limit > MaxLimit {
		return f, fmt.Errorf("%w: limit must be 1 to %d, got %d", ErrInvalid, MaxLimit, f.Limit)
	}
	if f.Consumer != "" && !validToken(f.Consumer) {
		return f, fmt.Errorf("%w: consumer %q is not a consumer name", ErrInvalid, f.Consumer)
	}
	return f, nil
}

// validToken accepts a consumer name as JetStream does: one subject token.
func validToken(s string) bool {
	return len(s) <= 255 && !strings.ContainsAny(s, ". *>\t\r\n")
}

func (f Filter) matches(l Letter) bool {
	return (f.Consumer == "" || l.Consumer == f.Consumer) &&
		(f.Type == "" || l.Type == f.Type) &&
		(f.Reason == "" || strings.Contains(strings.ToLower(l.Error), strings.ToLower(f.Reason)))
}

// Letter is one dead letter.
type Letter struct {
	Seq             uint64    `json:"seq"`      // its sequence in the dead-letter stream: its id
	Consumer        string    `json:"consumer"` // the consumer that gave up on it
	Type            string    `json:"type,omitempty"`
	MsgID           string    `json:"msg_id,omitempty"` // the original Nats-Msg-Id (converge: the event id)
	Error           string    `json:"error"`
	Deliveries      uint64    `json:"deliveries"`
	OriginalSubject string    `json:"original_subject"`
	OriginalStream  string    `json:"original_stream"`
	OriginalSeq     uint64    `json:"original_seq"`
	DeadLetteredAt  time.Time `json:"dead_lettered_at"`
	// Headers and the payload are only in Get's answer. The payload is
	// given as JSON when it is JSON, and in base64 when it is not.
	Headers       map[string][]string `json:"headers,omitempty"`
	Payload       json.RawMessage     `json:"payload,omitempty"`
	PayloadBase64 []byte              `json:"payload_base64,omitempty"`
}

// Page is one page of a listing; Next, when set, is the After of the next.
type Page struct {
	Items []Letter `json:"items"`
	Next  string   `json:"next"`
}

// Queue is the dead-letter stream of one deployment.
type Queue struct {
	js     jetstream.JetStream
	stream string
}

// New returns the Queue over stream, whose subjects are
// broker.DeadLetterPrefix + consumer.
func New(js jetstream.JetStream, stream string) *Queue {
	return &Queue{js: js, stream: stream}
}

// Stream is the name of the dead-letter stream.
func (q *Queue) Stream() string { return q.stream }

func (q *Queue) open(ctx context.Context) (jetstream.Stream, error) {
	st, err := q.js.Stream(ctx, q.stream)
	if err != nil {
		return nil, q.wrap("open stream "+q.stream, err)
	}
	return st, nil
}

// wrap adds context to err and marks what an unreachable broker causes.
func (q *Queue) wrap(what string, err error) error {
	if errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// scan calls fn with each dead letter matching f, in sequence order,
// until fn returns false, the stream ends or maxScan messages were read.
// It returns the last sequence it read and whether the stream may hold
// more after it.
func (q *Queue) scan(ctx context.Context, st jetstream.Stream, f Filter, fn func(Letter) bool) (last uint64, more bool, err error) {
	subject := broker.DeadLetterPrefix + ">"
	if f.Consumer != "" {
		subject = broker.DeadLetterPrefix + f.Consumer
	}
	seq := f.After
	for range maxScan {
		m, err := st.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seq, false, nil
		}
		if err != nil {
			return seq, false, q.wrap(fmt.Sprintf("read %s after %d", q.stream, seq), err)
		}
		seq = m.Sequence
		l := letterOf(m, false)
		if f.matches(l) && !fn(l) {
			return seq, true, nil
		}
	}
	return seq, true, nil
}

// List returns up to f.Limit dead letters matching f after f.After. A
// page may hold fewer than the limit and still have a Next: follow Next
// until it is empty.
func (q *Queue) List(ctx context.Context, f Filter) (Page, error) {
	f, err := f.check()
	if err != nil {
		return Page{}, err
	}
	st, err := q.open(ctx)
	if err != nil {
		return Page{}, err
	}
	page := Page{Items: []Letter{}}
	last, more, err := q.scan(ctx, st, f, func(l Letter) bool {
		page.Items = append(page.Items, l)
		return len(page.Items) < f.Limit
	})
	if err != nil {
		return Page{}, err
	}
	if more {
		page.Next = strconv.FormatUint(last, 10)
	}
	return page, nil
}

// Get returns dead letter seq with its headers and payload.
func (q *Queue) Get(ctx context.Context, seq uint64) (Letter, error) {
	st, err := q.open(ctx)
	if err != nil {
		return Letter{}, err
	}
	m, err := q.get(ctx, st, seq)
	if err != nil {
		return Letter{}, err
	}
	return letterOf(m, true), nil
}

func (q *Queue) get(ctx context.Context, st jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	if seq == 0 {
		return nil, fmt.Errorf("%w: a dead letter's sequence is a whole number from 1", ErrInvalid)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %d (replayed or discarded already?)", ErrNotFound, seq)
	}
	if err != nil {
		return nil, q.wrap(fmt.Sprintf("read dead letter %d", seq), err)
	}
	if !strings.HasPrefix(m.Subject, broker.DeadLetterPrefix) {
		return nil, fmt.Errorf("%w: %d is not a dead letter (subject %s)", ErrNotFound, seq, m.Subject)
	}
	return m, nil
}

// Replayed is what Replay did.
type Replayed struct {
	Seq       uint64 `json:"seq"`        // the dead letter
	Subject   string `json:"subject"`    // where it was published again
	Stream    string `json:"stream"`     // the stream that stored it
	StreamSeq uint64 `json:"stream_seq"` // its new sequence there
	// Duplicate: the broker had stored this replay already (a replay of
	// the same dead letter inside its duplicate window) and kept one.
	Duplicate bool `json:"duplicate"`
}

// Replay publishes dead letter seq to its original subject, waits for
// the broker to store it, and then deletes the dead letter.
func (q *Queue) Replay(ctx context.Context, seq uint64) (Replayed, error) {
	st, err := q.open(ctx)
	if err != nil {
		return Replayed{}, err
	}
	m, err := q.get(ctx, st, seq)
	if err != nil {
		return Replayed{}, err
	}
	return q.replay(ctx, st, m)
}

func (q *Queue) replay(ctx context.Context, st jetstream.Stream, m *jetstream.RawStreamMsg) (Replayed, error) {
	l := letterOf(m, false)
	if l.OriginalSubject == "" || l.OriginalStream == "" {
		return Replayed{}, fmt.Errorf("%w: %d has no original subject or stream", ErrNotReplayable, l.Seq)
	}
	msg := replayMsg(q.stream, m, l)
	// The stream check keeps a replay from landing anywhere but where the
	// message came from, should the subjects have been rearranged since.
	ack, err := q.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(l.OriginalStream))
	if err != nil {
		return Replayed{}, q.wrap(fmt.Sprintf("replay dead letter %d to %s", l.Seq, l.OriginalSubject), err)
	}
	if err := q.delete(ctx, st, l.Seq); err != nil {
		return Replayed{}, fmt.Errorf("dead letter %d was replayed (%s #%d) but is still there; replaying it again is harmless: %w",
			l.Seq, ack.Stream, ack.Sequence, err)
	}
	return Replayed{Seq: l.Seq, Subject: l.OriginalSubject, Stream: ack.Stream, StreamSeq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// replayMsg is the original message again: its subject, payload and own
// headers, without what the dead-lettering added, under a message ID
// that is the same for every replay of this dead letter.
func replayMsg(stream string, m *jetstream.RawStreamMsg, l Letter) *nats.Msg {
	h := nats.Header{}
	for k, vs := range m.Header {
		if deadLetterHeader(k) {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	h.Set(jetstream.MsgIDHeader, fmt.Sprintf("replay-%s-%d", stream, l.Seq))
	h.Set(HeaderReplayOf, fmt.Sprintf("%s/%d", stream, l.Seq))
	return &nats.Msg{Subject: l.OriginalSubject, Data: m.Data, Header: h}
}

// deadLetterHeader reports headers the dead-lettering added, and Nats-*
// headers, which steer the server and must not apply to the replay.
func deadLetterHeader(k string) bool {
	if strings.HasPrefix(strings.ToLower(k), "nats-") {
		return true
	}
	for _, d := range []string{broker.HeaderError, broker.HeaderOriginalSubject, broker.HeaderOriginalStream,
		broker.HeaderOriginalSeq, broker.HeaderOriginalMsgID, broker.HeaderDeliveries, broker.HeaderDeadLetteredAt, HeaderReplayOf} {
		if strings.EqualFold(k, d) {
			return true
		}
	}
	return false
}

// Discard deletes dead letter seq.
func (q *Queue) Discard(ctx context.Context, seq uint64) error {
	st, err := q.open(ctx)
	if err != nil {
		return err
	}
	if _, err := q.get(ctx, st, seq); err != nil {
		return err
	}
	return q.delete(ctx, st, seq)
}

// delete removes seq; one that is gone already (a concurrent replay or
// discard) counts as deleted.
func (q *Queue) delete(ctx context.Context, st jetstream.Stream, seq uint64) error {
	err := st.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	if errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		if _, gerr := st.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return nil
		}
		err = fmt.Errorf("%w: %w", errDeleteRejected, err)
	}
	return q.wrap(fmt.Sprintf("delete dead letter %d", seq), err)
}

// Done is what a bulk operation did: the dead letters it replayed or
// discarded, and whether more may match (call it again).
type Done struct {
	Seqs []uint64 `json:"seqs"`
	More bool     `json:"more"`
}

// ReplayAll replays up to f.Limit dead letters matching f, in sequence
// order. It stops at the first failure and returns what it did with it.
func (q *Queue) ReplayAll(ctx context.Context, f Filter) (Done, error) {
	return q.each(ctx, f, func(ctx context.Context, st jetstream.Stream, m *jetstream.RawStreamMsg) error {
		_, err := q.replay(ctx, st, m)
		return err
	})
}

// DiscardAll deletes up to f.Limit dead letters matching f.
func (q *Queue) DiscardAll(ctx context.Context, f Filter) (Done, error) {
	return q.each(ctx, f, func(ctx context.Context, st jetstream.Stream, m *jetstream.RawStreamMsg) error {
		return q.delete(ctx, st, m.Sequence)
	})
}

func (q *Queue) each(ctx context.Context, f Filter, do func(context.Context, jetstream.Stream, *jetstream.RawStreamMsg) error) (Done, error) {
	f, err := f.check()
	if err != nil {
		return Done{}, err
	}
	st, err := q.open(ctx)
	if err != nil {
		return Done{}, err
	}
	// Collect first, then act: acting deletes what the scan walks over.
	var seqs []uint64
	_, more, err := q.scan(ctx, st, f, func(l Letter) bool {
		seqs = append(seqs, l.Seq)
		return len(seqs) < f.Limit
	})
	if err != nil {
		return Done{}, err
	}
	done := Done{Seqs: []uint64{}, More: more}
	for _, seq := range seqs {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // replayed or discarded meanwhile by someone else
		}
		if err != nil {
			return done, q.wrap(fmt.Sprintf("read dead letter %d", seq), err)
		}
		if err := do(ctx, st, m); err != nil {
			return done, fmt.Errorf("after %d done: %w", len(done.Seqs), err)
		}
		done.Seqs = append(done.Seqs, seq)
	}
	return done, nil
}

// letterOf reads a dead letter from its message; full adds the headers
// and the payload.
func letterOf(m *jetstream.RawStreamMsg, full bool) Letter {
	h := m.Header
	l := Letter{
		Seq:             m.Sequence,
		Consumer:        strings.TrimPrefix(m.Subject, broker.DeadLetterPrefix),
		Type:            eventType(h, m.Data),
		MsgID:           h.Get(broker.HeaderOriginalMsgID),
		Error:           h.Get(broker.HeaderError),
		OriginalSubject: h.Get(broker.HeaderOriginalSubject),
		OriginalStream:  h.Get(broker.HeaderOriginalStream),
	}
	l.Deliveries, _ = strconv.ParseUint(h.Get(broker.HeaderDeliveries), 10, 64)
	l.OriginalSeq, _ = strconv.ParseUint(h.Get(broker.HeaderOriginalSeq), 10, 64)
	if at, err := time.Parse(time.RFC3339, h.Get(broker.HeaderDeadLetteredAt)); err == nil {
		l.DeadLetteredAt = at
	} else {
		l.DeadLetteredAt = m.Time.UTC().Truncate(time.Second)
	}
	if !full {
		return l
	}
	l.Headers = map[string][]string{}
	for k, vs := range h {
		l.Headers[k] = append([]string(nil), vs...)
	}
	if json.Valid(m.Data) {
		l.Payload = json.RawMessage(m.Data)
	} else {
		l.PayloadBase64 = m.Data
	}
	return l
}

// eventType is the CloudEvents type of a message: the ce-type header of
// binary mode, or the "type" member of a structured-mode JSON payload;
// empty when it is neither.
func eventType(h nats.Header, data []byte) string {
	if t := h.Get("ce-type"); t != "" {
		return t
	}
	var ce struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(data, &ce) == nil {
		return ce.Type
	}
	return ""
}
