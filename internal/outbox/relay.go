package outbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/telemetry"
)

// RelayConfig tunes a Relay; zero values take the defaults.
type RelayConfig struct {
	Batch      int           // rows published per round; default 256
	Poll       time.Duration // how often to look without a wake-up; default 1s
	MaxBackoff time.Duration // cap of the retry delay while the broker is away; default 1s
	// Lease is how long a relay may publish after it last renewed its
	// claim on the outbox; default 5s. A relay that dies or stalls leaves
	// the outbox to another within Lease plus one Poll.
	Lease time.Duration
	// Holder names this relay in the lease; default host-pid-random.
	Holder string
	// Observe, if set, is told of every batch the relay published (n rows,
	// err nil) or failed to publish (err set); metrics use it.
	Observe func(n int, err error)
	// Name is the service whose outbox this is, in span names; default
	// "outbox".
	Name string
	// Tracing continues each row's trace: a span for the relay's part and
	// a producer span for the publish, whose context the message carries.
	Tracing telemetry.Tracing
}

// leaseName is the one lease per outbox. A later design can split the
// outbox into partitions, each with its own lease row.
const leaseName = "relay"

// Relay publishes outbox rows in seq order (on PostgreSQL a row may commit
// after a later seq; it goes out in the next round, and one order's events,
// written by transactions that lock the order, keep their order). It
// wakes when Notify is called after a commit, and polls slowly as a safety
// net.
//
// Many instances of a service may run a relay over one database: they
// share it through a lease (a row in outbox_lease), and only the holder
// publishes, the oldest unpublished rows first, so one order's events leave
// in the order they were written and no row is published twice in normal
// operation. (After a failed publish the resend may store an event after a
// later one; see broker.Conn.PublishBatch. The consumers apply events in
// any order.) The others stand by and take over when the holder's lease
// runs out. A holder that was paused past its lease may still publish the
// batch it had in hand; those events carry their ids as Nats-Msg-Id, so the
// broker drops them inside its duplicate window, and the consumers' inboxes
// drop them after it.
type Relay struct {
	db   *store.DB
	conn *broker.Conn
	log  *slog.Logger
	cfg  RelayConfig
	wake chan struct{}

	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	heldUntil time.Time // by our clock: we may publish until then
	renewed   time.Time // when we last renewed the lease
	nextTry   time.Time // standing by: when to ask for the lease again

	// beforePublish, when set (by tests), runs between reading a batch of n
	// rows and publishing it, to count batches or stall a relay mid-batch.
	beforePublish func(n int)
	// afterRound, when set (by tests, before Run), runs after each round
	// of Run in which the relay held the lease.
	afterRound func()
}

// NewRelay returns a relay that publishes db's outbox through conn.
func NewRelay(db *store.DB, conn *broker.Conn, log *slog.Logger, cfg RelayConfig) *Relay {
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		// Short, so that the relay finds a broker back within a second: a
		// try costs nothing while disconnected, and one read of the outbox
		// and one failed publish while the broker cannot store yet.
		cfg.MaxBackoff = time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 5 * time.Second
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname() // only a label: empty is fine
		cfg.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strings.ToLower(rand.Text()[:8]))
	}
	if cfg.Name == "" {
		cfg.Name = "outbox"
	}
	return &Relay{db: db, conn: conn, log: log.With("relay", cfg.Holder), cfg: cfg, wake: make(chan struct{}, 1),
		tracer: cfg.Tracing.Tracer("outbox"), prop: cfg.Tracing.Propagation()}
}

// Notify wakes the relay; call it after committing a transaction that added
// rows. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx is done, then makes one last bounded attempt to
// flush what is left and gives up its lease, so a clean shutdown leaves
// nothing behind that the broker could have taken and another instance
// takes over at its next look (within min(Poll, Lease/4)).
func (r *Relay) Run(ctx context.Context) {
	backoff := time.Duration(0)
	var warned time.Time // the last "publish failed" warning
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			r.finalFlush()
			return
		case <-r.wake:
		case <-timer.C:
		}
		held, err := r.hold(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("outbox relay: cannot read or renew the lease", "err", err)
		}
		if !held {
			backoff = 0 // another relay publishes; its failures are not ours
			// Standing by: look again before the holder's lease could run out.
			resetTimer(timer, min(r.cfg.Poll, r.cfg.Lease/4))
			continue
		}
		n, err := r.flush(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			prev := backoff
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
			// Every retry while the delay grows, then one line every
			// retryWarnEvery: an outage of minutes is not thousands of
			// lines (the failures are counted in the relay's metrics).
			if backoff != prev || time.Since(warned) >= retryWarnEvery {
				r.log.Warn("outbox relay: publish failed; retrying", "in", backoff, "err", err)
				warned = time.Now()
			}
			resetTimer(timer, backoff)
			// A wake-up must not cut the backoff short.
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
			resetTimer(timer, 0)
		case n > 0:
			if backoff > 0 {
				r.log.Info("outbox relay: publishing again")
			}
			backoff = 0
			resetTimer(timer, 0) // there may be more
		default:
			backoff = 0
			resetTimer(timer, r.cfg.Poll)
		}
		if r.afterRound != nil {
			r.afterRound()
		}
	}
}

// retryWarnEvery spaces the warnings of a relay that keeps failing at its
// longest delay.
const retryWarnEvery = 30 * time.Second

func (r *Relay) finalFlush() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defer r.release(ctx)
	for {
		if held, err := r.hold(ctx); !held {
			if err != nil {
				r.log.Warn("outbox relay: no lease at shutdown; the holder publishes what is left", "err", err)
			}
			return
		}
		n, err := r.flush(ctx)
		if err != nil {
			r.log.Warn("outbox relay: rows left unpublished at shutdown; they go out on the next start", "err", err)
			return
		}
		if n == 0 {
			return
		}
	}
}

// hold reports whether this relay holds the lease, renewing it once a
// third of it has passed, or taking it if its holder let it run out.
func (r *Relay) hold(ctx context.Context) (bool, error) {
	now := time.Now()
	if now.Before(r.heldUntil) && now.Sub(r.renewed) < r.cfg.Lease/3 {
		return true, nil
	}
	if r.heldUntil.IsZero() && now.Before(r.nextTry) {
		return false, nil // standing by; wake-ups must not each cost a write
	}
	until := now.Add(r.cfg.Lease)
	var took bool
	err := r.db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO outbox_lease (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE outbox_lease.holder = excluded.holder OR outbox_lease.expires_at < $4`,
			leaseName, r.cfg.Holder, until.UnixMicro(), now.UnixMicro())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		took = n == 1
		return err
	})
	if err != nil {
		// Keep what we had: a lease that has not run out is still ours.
		return time.Now().Before(r.heldUntil), fmt.Errorf("outbox lease: %w", err)
	}
	if !took {
		if !r.heldUntil.IsZero() {
			r.log.Info("outbox relay: another relay holds the lease; standing by")
		}
		r.heldUntil = time.Time{}
		r.nextTry = now.Add(min(r.cfg.Poll, r.cfg.Lease/4))
		return false, nil
	}
	if r.heldUntil.IsZero() {
		r.log.Info("outbox relay: took the lease; publishing", "lease", r.cfg.Lease)
	}
	r.heldUntil, r.renewed = until, now
	return true, nil
}

// release gives the lease up, so that another instance need not wait for it
// to run out.
func (r *Relay) release(ctx context.Context) {
	if r.heldUntil.IsZero() {
		return
	}
	r.heldUntil = time.Time{}
	err := r.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE outbox_lease SET expires_at = 0 WHERE name = $1 AND holder = $2`, leaseName, r.cfg.Holder)
		return err
	})
	if err != nil {
		r.log.Warn("outbox relay: could not give up the lease; it runs out by itself", "in", r.cfg.Lease, "err", err)
	}
}

// errLeaseLost stops a batch whose lease ran out while it was being read.
var errLeaseLost = errors.New("outbox lease ran out before publishing")

// errNotConnected stops a round while the broker connection is down.
var errNotConnected = errors.New("outbox publish: not connected to the broker")

// flush publishes one batch of the oldest unpublished rows and marks them.
// It returns how many rows it published.
func (r *Relay) flush(ctx context.Context) (n int, err error) {
	if r.cfg.Observe != nil {
		defer func() {
			if n > 0 || err != nil {
				r.cfg.Observe(n, err)
			}
		}()
	}
	if !r.conn.Connected() {
		// Nothing could be published: spare the read and a span per row
		// on every retry of an outage.
		return 0, errNotConnected
	}
	readAt := time.Now()
	rows, err := r.db.QueryContext(ctx, `SELECT seq, event_id, subject, payload, traceparent
		FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1`, r.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("outbox read: %w", err)
	}
	var (
		msgs  []broker.Message
		seqs  []any
		spans []trace.Span // the relay's, of every row
		pubs  []trace.Span // the publish's, of every row
	)
	defer func() {
		for _, s := range pubs { // not published: the batch went no further
			s.End()
		}
		for _, s := range spans {
			if err != nil {
				s.SetStatus(codes.Error, err.Error())
			}
			s.End()
		}
	}()
	for rows.Next() {
		var (
			seq    int64
			m      broker.Message
			parent string // the row's traceparent
		)
		if err := rows.Scan(&seq, &m.ID, &m.Subject, &m.Data, &parent); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox read: %w", err)
		}
		m.Header = map[string]string{"Content-Type": "application/cloudevents+json"}
		// The row's trace goes on: the message carries the publish
		// span's context (or, untraced, the row's traceparent as it is).
		rctx, relaySpan := r.tracer.Start(telemetry.WithTraceParent(ctx, parent), r.cfg.Name+" outbox relay",
			trace.WithTimestamp(readAt), trace.WithAttributes(attribute.String("messaging.message.id", m.ID)))
		pctx, pubSpan := r.tracer.Start(rctx, r.cfg.Name+" broker publish "+m.Subject, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", m.Subject),
				attribute.String("messaging.message.id", m.ID)))
		r.prop.Inject(pctx, propagation.MapCarrier(m.Header))
		// The publish ends at the broker's ack, the relay's part once the
		// row is marked published (deferred).
		spans = append(spans, relaySpan)
		pubs = append(pubs, pubSpan)
		msgs = append(msgs, m)
		seqs = append(seqs, seq)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, fmt.Errorf("outbox read: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if r.beforePublish != nil {
		r.beforePublish(len(msgs))
	}
	if !time.Now().Before(r.heldUntil) {
		return 0, errLeaseLost
	}
	err = r.conn.PublishBatch(ctx, msgs)
	for _, s := range pubs {
		if err != nil {
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
	pubs = nil
	if err != nil {
		return 0, fmt.Errorf("outbox publish %d events: %w", len(msgs), err)
	}
	// Marking after the acks: a crash in between republishes the batch,
	// which the broker's duplicate window and the consumers' inboxes absorb.
	err = r.db.InTx(ctx, func(tx *store.Tx) error {
		args := append([]any{time.Now().UnixMicro()}, seqs...)
		ph := make([]string, len(seqs))
		for i := range seqs {
			ph[i] = fmt.Sprintf("$%d", i+2)
		}
		_, err := tx.ExecContext(ctx, `UPDATE outbox SET published_at = $1 WHERE seq IN (`+strings.Join(ph, ",")+`)`, args...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("outbox mark %d published: %w", len(msgs), err)
	}
	return len(msgs), nil
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}
