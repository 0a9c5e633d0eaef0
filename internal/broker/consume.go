package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrPermanent marks a handler error that retrying cannot fix.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err so that errors.Is(result, ErrPermanent) holds and the
// delivery is dead-lettered without further retries. errors.Is and
// errors.As still see err itself.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// Headers of a dead-lettered copy, besides the original's own headers.
const (
	HeaderError           = "Converge-Error"
	HeaderOriginalSubject = "Converge-Original-Subject"
	HeaderOriginalStream  = "Converge-Original-Stream"
	HeaderOriginalSeq     = "Converge-Original-Seq"
	HeaderOriginalMsgID   = "Converge-Original-Msg-Id" // the original Nats-Msg-Id
	HeaderDeliveries      = "Converge-Deliveries"
	HeaderDeadLetteredAt  = "Converge-Dead-Lettered-At" // RFC 3339, UTC
)

// DeadLetterPrefix starts the default dead-letter subject of a consumer:
// DeadLetterPrefix + its durable name.
const DeadLetterPrefix = "dlq."

const (
	defaultBatch = 64
	// defaultAckWait is how long the server waits for the ack of a
	// delivery before it delivers the message again. It bounds how long
	// an event stalls when its delivery is lost: an instance killed with
	// the message in hand, or a delivery lost while consumer leadership
	// moves between brokers. A batch slower than this keeps its messages
	// by reporting progress (keepInProgress), up to handleTimeout.
	defaultAckWait = 10 * time.Second
	// minAckWait keeps the progress reports (a third of AckWait apart)
	// from flooding the server.
	minAckWait = 100 * time.Millisecond
	// handleTimeout is the handler's deadline for one batch.
	handleTimeout = 30 * time.Second
	// maxErrorHeaderLen keeps a huge error text from pushing the copy over
	// the server's max payload, which would make it impossible to dead-letter.
	maxErrorHeaderLen = 2048
)

// DefaultMaxDeliver is how many deliveries a message gets before it is
// dead-lettered, unless ConsumerConfig.MaxDeliver says otherwise.
const DefaultMaxDeliver = 10

// DefaultBackoff is the delay before each redelivery after a failure, the
// last repeated: with DefaultMaxDeliver, about two minutes of retries. A
// function so that no caller can share or alter it.
func DefaultBackoff() []time.Duration {
	return []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second}
}

const (
	// Pull requests expire and are renewed every pullExpiry; with idle
	// heartbeats every pullHeartbeat nats.go notices a pull the server lost
	// (e.g. across a restart) within 2*pullHeartbeat and re-issues it.
	pullExpiry    = 10 * time.Second
	pullHeartbeat = 2 * time.Second
	// stopTimeout bounds waiting for nats.go to stop a subscription.
	stopTimeout = 5 * time.Second
	// resubscribeMin/Max pace re-creating the consumer after a failure.
	resubscribeMin = 250 * time.Millisecond
	resubscribeMax = 5 * time.Second
)

// Delivery is one message handed to a BatchHandler.
type Delivery struct {
	Subject      string
	Data         []byte
	Header       nats.Header
	Stream       string
	StreamSeq    uint64
	NumDelivered uint64
}

// BatchHandler handles deliveries that have arrived together, so the caller
// can apply them in one DB transaction (group commit). It returns one error
// per delivery (same length, nil = done -> ack). An error wrapping
// ErrPermanent means retrying cannot help.
//
// ctx is not cancelled when Consume's ctx is, so the batch in hand can be
// finished during shutdown; it expires after 30 s. Until then Consume
// tells the server the batch is in progress, so that it is not delivered
// again meanwhile.
type BatchHandler func(ctx context.Context, ds []Delivery) []error

// ConsumerConfig configures Consume.
type ConsumerConfig struct {
	Stream            string
	Durable           string // durable pull consumer name (shared by all instances of a service)
	FilterSubjects    []string
	Backoff           []time.Duration // delay before redelivery after the n-th failure; default [100ms, 500ms, 2s, 5s, 10s, 30s], the last repeated
	MaxDeliver        int             // deliveries before dead-lettering; default 10 (about 2 minutes of retries)
	AckWait           time.Duration   // redelivery after a delivery neither acked nor reported in progress; default 10s, at least 100ms
	Batch             int             // max deliveries handed to the handler at once; default 64
	DeadLetterSubject string          // default "dlq." + Durable
	// BindOnly makes Consume use the durable consumer as it exists (made
	// by EnsureConsumer in a setup step) instead of creating or updating
	// it. Until it exists Consume keeps retrying.
	BindOnly bool
}

// errConsumerMismatch marks a bound consumer that Consume cannot work with.
var errConsumerMismatch = errors.New("consumer settings do not fit")

// consumerConfig is the server-side consumer Consume works with.
func (cfg ConsumerConfig) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubjects: cfg.FilterSubjects,
		AckWait:        cfg.AckWait,
		// Our own count is authoritative: the server must never give up on
		// a message (it would just stop delivering it, silently). BackOff is
		// left unset on purpose: the server would replace AckWait with
		// BackOff[0] and redeliver messages still being handled; the retry
		// delays are applied with NakWithDelay instead.
		MaxDeliver: -1,
	}
}

// checkBound checks the settings of a consumer made by someone else that
// would silently break the retry and dead-letter policy.
func checkBound(have jetstream.ConsumerConfig) error {
	switch {
	case have.AckPolicy != jetstream.AckExplicitPolicy:
		return fmt.Errorf("%w: ack policy %s, want explicit", errConsumerMismatch, have.AckPolicy)
	case have.MaxDeliver != -1:
		return fmt.Errorf("%w: max deliver %d, want -1 (Consume counts deliveries itself)", errConsumerMismatch, have.MaxDeliver)
	case len(have.BackOff) > 0:
		return fmt.Errorf("%w: server-side backoff is set, want none (Consume delays retries itself)", errConsumerMismatch)
	case have.AckWait < minAckWait:
		return fmt.Errorf("%w: ack wait %s, want at least %s", errConsumerMismatch, have.AckWait, minAckWait)
	}
	return nil
}

func (cfg ConsumerConfig) withDefaults() (ConsumerConfig, error) {
	if cfg.Stream == "" || cfg.Durable == "" {
		return cfg, errors.New("stream and durable name are required")
	}
	if len(cfg.Backoff) == 0 {
		cfg.Backoff = DefaultBackoff()
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if cfg.MaxDeliver < 1 {
		return cfg, fmt.Errorf("MaxDeliver %d: must be at least 1", cfg.MaxDeliver)
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = defaultAckWait
	}
	if cfg.AckWait < minAckWait {
		return cfg, fmt.Errorf("AckWait %s: must be at least %s", cfg.AckWait, minAckWait)
	}
	if cfg.Batch == 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.Batch < 1 {
		return cfg, fmt.Errorf("batch %d: must be at least 1", cfg.Batch)
	}
	if cfg.DeadLetterSubject == "" {
		cfg.DeadLetterSubject = DeadLetterPrefix + cfg.Durable
	}
	return cfg, nil
}

// backoff is the delay before the next delivery after a failed delivery n.
func (cfg ConsumerConfig) backoff(n uint64) time.Duration {
	i := len(cfg.Backoff) - 1
	if n >= 1 && n-1 < uint64(i) {
		i = int(n - 1)
	}
	return cfg.Backoff[i]
}

// Consume creates or updates the durable pull consumer (or, with BindOnly,
// uses it as it is) and feeds its messages to h until ctx is done; then it finishes the batch in hand and
// returns nil. Transient failures of the server or connection are retried
// for as long as ctx lives; Consume returns an error only for a bad
// configuration or a closed connection.
func (c *Conn) Consume(ctx context.Context, cfg ConsumerConfig, h BatchHandler) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("consume %s/%s: %w", cfg.Stream, cfg.Durable, err)
	}
	l := &consumeLoop{
		c:     c,
		cfg:   cfg,
		h:     h,
		log:   c.log.With("stream", cfg.Stream, "consumer", cfg.Durable),
		inbox: make(chan jetstream.Msg, cfg.Batch),
		quit:  make(chan struct{}),
	}
	defer close(l.quit)

	wait := resubscribeMin
	for {
		cc, closed, err := l.subscribe(ctx)
		if err == nil {
			wait = resubscribeMin
			l.run(ctx, cc, closed)
		}
		if ctx.Err() != nil {
			l.nakInbox()
			return nil
		}
		if c.nc.IsClosed() {
			l.nakInbox()
			return fmt.Errorf("consume %s/%s: %w", cfg.Stream, cfg.Durable, nats.ErrConnectionClosed)
		}
		if err != nil && isConfigError(err) {
			l.nakInbox()
			return fmt.Errorf("consume %s/%s: %w", cfg.Stream, cfg.Durable, err)
		}
		if err != nil {
			l.log.Warn("cannot start consuming, will retry", "err", err, "retry_in", wait)
		} else {
			l.log.Warn("consuming stopped unexpectedly, restarting", "retry_in", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			l.nakInbox()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, resubscribeMax)
	}
}

// isConfigError reports errors that retrying will not fix.
func isConfigError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return true
	}
	return errors.Is(err, errConsumerMismatch) ||
		errors.Is(err, jetstream.ErrInvalidStreamName) ||
		errors.Is(err, jetstream.ErrInvalidConsumerName) ||
		errors.Is(err, jetstream.ErrInvalidOption)
}

type consumeLoop struct {
	c     *Conn
	cfg   ConsumerConfig
	h     BatchHandler
	log   *slog.Logger
	inbox chan jetstream.Msg // from the nats.go callback to the batching loop
	quit  chan struct{}      // closed when Consume returns
}

func (l *consumeLoop) subscribe(ctx context.Context) (jetstream.ConsumeContext, <-chan struct{}, error) {
	cons, err := l.consumer(ctx)
	if err != nil {
		return nil, nil, err
	}
	cc, err := cons.Consume(l.deliver,
		// Buffer about two batches: enough to hand over a full batch as soon
		// as the previous one is done, little enough that buffered messages
		// do not sit out their AckWait unless the batch ahead of them is
		// that slow. They are not reported in progress: if it is, they are
		// delivered again (the inbox makes that a no-op).
		jetstream.PullMaxMessages(2*l.cfg.Batch),
		jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			l.log.Warn("consume", "err", err)
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("consume: %w", err)
	}
	// Taken now, this channel is closed only after nats.go has returned from
	// its last callback; asked for after Stop it may already be closed.
	return cc, cc.Closed(), nil
}

// consumer finds, and unless BindOnly creates or updates, the consumer.
func (l *consumeLoop) consumer(ctx context.Context) (jetstream.Consumer, error) {
	if !l.cfg.BindOnly {
		cons, err := l.c.ensureConsumer(ctx, l.cfg, true)
		if err != nil {
			return nil, fmt.Errorf("ensure consumer: %w", err)
		}
		return cons, nil
	}
	cons, err := l.c.js.Consumer(ctx, l.cfg.Stream, l.cfg.Durable)
	if err != nil {
		return nil, fmt.Errorf("bind consumer: %w", err)
	}
	have := cons.CachedInfo().Config
	if err := checkBound(have); err != nil {
		return nil, err
	}
	// The progress reports must come before the redelivery the server
	// will actually do (see keepInProgress for a change while bound).
	l.cfg.AckWait = have.AckWait
	return cons, nil
}

// deliver is the nats.go callback. It only queues the message, so that the
// loop can group whatever has arrived into one batch.
func (l *consumeLoop) deliver(m jetstream.Msg) {
	select {
	case l.inbox <- m:
	case <-l.quit:
		// Nobody will handle it; the server redelivers after AckWait.
	}
}

// run handles batches until ctx is done (then it stops the subscription) or
// until nats.go gives up on the subscription by itself.
func (l *consumeLoop) run(ctx context.Context, cc jetstream.ConsumeContext, closed <-chan struct{}) {
	for {
		if ctx.Err() != nil {
			l.stop(cc, closed)
			return
		}
		select {
		case <-ctx.Done():
			l.stop(cc, closed)
			return
		case <-closed:
			return
		case m := <-l.inbox:
			l.handle(ctx, l.collect(m))
		}
	}
}

// collect returns first plus whatever else has already arrived, up to
// Batch; it never waits to fill a batch.
func (l *consumeLoop) collect(first jetstream.Msg) []jetstream.Msg {
	batch := []jetstream.Msg{first}
	for len(batch) < l.cfg.Batch {
		select {
		case m := <-l.inbox:
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

// stop ends the subscription and hands back messages that arrived but were
// never handled.
func (l *consumeLoop) stop(cc jetstream.ConsumeContext, closed <-chan struct{}) {
	cc.Stop()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	var unhandled []jetstream.Msg
wait:
	for {
		select {
		case m := <-l.inbox: // unblocks a callback waiting to queue
			unhandled = append(unhandled, m)
		case <-closed:
			break wait
		case <-timer.C:
			l.log.Warn("subscription did not stop in time", "timeout", stopTimeout)
			break wait
		}
	}
	for _, m := range unhandled {
		l.nak(m)
	}
	l.nakInbox()
	// Acks are fire-and-forget; make sure those of the last batch have left
	// before we report that we stopped, so they are not redelivered. While
	// disconnected there is nothing to flush to.
	if !l.c.nc.IsConnected() {
		return
	}
	if err := l.c.nc.FlushTimeout(stopTimeout); err != nil {
		l.log.Warn("flush acks on stop", "err", err)
	}
}

// nakInbox gives queued messages back to the server right away, so that
// another instance can take them without waiting out AckWait. The
// subscription is stopped by then, so they do not come back here.
func (l *consumeLoop) nakInbox() {
	for {
		select {
		case m := <-l.inbox:
			l.nak(m)
		default:
			return
		}
	}
}

func (l *consumeLoop) nak(m jetstream.Msg) {
	if err := m.Nak(); err != nil {
		l.log.Debug("nak unhandled message", "subject", m.Subject(), "err", err)
	}
}

// handle passes one batch to the handler and settles every message.
func (l *consumeLoop) handle(ctx context.Context, batch []jetstream.Msg) {
	msgs := make([]jetstream.Msg, 0, len(batch))
	ds := make([]Delivery, 0, len(batch))
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream delivery, so it cannot be acked either.
			l.log.Error("message without JetStream metadata", "subject", m.Subject(), "err", err)
			continue
		}
		msgs = append(msgs, m)
		ds = append(ds, Delivery{
			Subject:      m.Subject(),
			Data:         m.Data(),
			Header:       m.Headers(),
			Stream:       md.Stream,
			StreamSeq:    md.Sequence.Stream,
			NumDelivered: md.NumDelivered,
		})
	}
	if len(ds) == 0 {
		return
	}

	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handleTimeout)
	stopProgress := l.keepInProgress(hctx, msgs)
	errs := l.h(hctx, ds)
	stopProgress()
	cancel()
	if len(errs) != len(ds) {
		err := fmt.Errorf("batch handler returned %d results for %d deliveries", len(errs), len(ds))
		l.log.Error("bad handler result, retrying batch", "err", err)
		errs = make([]error, len(ds))
		for i := range errs {
			errs[i] = err
		}
	}

	var dead []int
	for i, d := range ds {
		err := errs[i]
		switch {
		case err == nil:
			if err := msgs[i].Ack(); err != nil {
				l.log.Warn("ack", "subject", d.Subject, "seq", d.StreamSeq, "err", err)
			}
		case errors.Is(err, ErrPermanent) || d.NumDelivered >= uint64(l.cfg.MaxDeliver):
			dead = append(dead, i)
		default:
			delay := l.cfg.backoff(d.NumDelivered)
			l.log.Info("handler failed, will retry", "subject", d.Subject, "seq", d.StreamSeq,
				"deliveries", d.NumDelivered, "retry_in", delay, "err", err)
			if err := msgs[i].NakWithDelay(delay); err != nil {
				l.log.Warn("nak", "subject", d.Subject, "seq", d.StreamSeq, "err", err)
			}
		}
	}
	if len(dead) > 0 {
		l.deadLetter(ctx, msgs, ds, errs, dead)
	}
}

// keepInProgress tells the server every third of AckWait that msgs are
// still being handled, until stop is called or ctx is done, so that a
// batch slower than AckWait is not delivered again (to this or another
// instance) while it is in hand. A handler that overruns ctx stops the
// reports, and the server delivers its messages again after AckWait.
// stop returns once no report can be sent any more, so the messages can
// be settled.
func (l *consumeLoop) keepInProgress(ctx context.Context, msgs []jetstream.Msg) (stop func()) {
	// A timer rather than a goroutine with a ticker: almost every batch is
	// settled long before the first report is due. Never further apart
	// than for the default ack wait: `converge setup` may shorten a bound
	// consumer's ack wait to it while this instance runs.
	every := min(l.cfg.AckWait, defaultAckWait) / 3
	var (
		mu      sync.Mutex
		stopped bool
		timer   *time.Timer
	)
	report := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		for _, m := range msgs {
			if err := m.InProgress(); err != nil {
				l.log.Warn("report in progress", "subject", m.Subject(), "err", err)
			}
		}
		timer.Reset(every)
	}
	mu.Lock()
	timer = time.AfterFunc(every, report)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
	}
}

// deadLetter publishes copies of the deliveries at idx to the dead-letter
// subject and terminates the originals. A copy that is not acknowledged
// leaves its original naked, to be tried again later.
func (l *consumeLoop) deadLetter(ctx context.Context, msgs []jetstream.Msg, ds []Delivery, errs []error, idx []int) {
	now := time.Now().UTC().Format(time.RFC3339)
	copies := make([]*nats.Msg, len(idx))
	for j, i := range idx {
		copies[j] = deadLetterCopy(l.cfg.DeadLetterSubject, ds[i], errs[i], now)
	}
	// Settle even when shutting down: the handler's work is already done.
	results := l.c.publishAll(context.WithoutCancel(ctx), copies)
	for j, i := range idx {
		d := ds[i]
		if err := results[j]; err != nil {
			delay := l.cfg.backoff(d.NumDelivered)
			l.log.Error("dead-letter failed, will retry", "subject", d.Subject, "seq", d.StreamSeq,
				"dead_letter_subject", l.cfg.DeadLetterSubject, "retry_in", delay, "err", err, "handler_err", errs[i])
			if err := msgs[i].NakWithDelay(delay); err != nil {
				l.log.Warn("nak", "subject", d.Subject, "seq", d.StreamSeq, "err", err)
			}
			continue
		}
		l.log.Warn("dead-lettered", "subject", d.Subject, "seq", d.StreamSeq, "deliveries", d.NumDelivered,
			"dead_letter_subject", l.cfg.DeadLetterSubject, "err", errs[i])
		if err := msgs[i].TermWithReason("dead-lettered to " + l.cfg.DeadLetterSubject); err != nil {
			// The copy is stored; a redelivery is dead-lettered again and
			// de-duplicated by its message ID.
			l.log.Warn("term", "subject", d.Subject, "seq", d.StreamSeq, "err", err)
		}
	}
}

func deadLetterCopy(subject string, d Delivery, cause error, at string) *nats.Msg {
	h := make(nats.Header, len(d.Header)+7)
	for k, vs := range d.Header {
		// Nats-* headers steer the server (de-duplication, expectations,
		// TTL, rollups) and would apply to the copy's publish; keep only
		// the original ID, under our own name.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	if id := d.Header.Get(jetstream.MsgIDHeader); id != "" {
		h.Set(HeaderOriginalMsgID, id)
	}
	h.Set(HeaderError, headerValue(cause.Error()))
	h.Set(HeaderOriginalSubject, d.Subject)
	h.Set(HeaderOriginalStream, d.Stream)
	h.Set(HeaderOriginalSeq, strconv.FormatUint(d.StreamSeq, 10))
	h.Set(HeaderDeliveries, strconv.FormatUint(d.NumDelivered, 10))
	h.Set(HeaderDeadLetteredAt, at)
	h.Set(jetstream.MsgIDHeader, fmt.Sprintf("dlq-%s-%d", d.Stream, d.StreamSeq))
	return &nats.Msg{Subject: subject, Data: d.Data, Header: h}
}

// headerValue makes s safe as a header value: a CR or LF would break the
// NATS protocol framing, and headers count against the max payload.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxErrorHeaderLen {
		s = strings.ToValidUTF8(s[:maxErrorHeaderLen], "")
	}
	return s
}
