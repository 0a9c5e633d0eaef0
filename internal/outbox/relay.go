package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/store"
)

// RelayConfig tunes a Relay; zero values take the defaults.
type RelayConfig struct {
	Batch      int           // rows published per round; default 256
	Poll       time.Duration // how often to look without a wake-up; default 1s
	MaxBackoff time.Duration // cap of the retry delay while the broker is away; default 5s
}

// Relay publishes outbox rows in commit order. It wakes when Notify is
// called after a commit, and polls slowly as a safety net.
//
// One relay per database: the relay reads the oldest unpublished rows and
// publishes them in order, which a second concurrent relay would break.
type Relay struct {
	db   *store.DB
	conn *broker.Conn
	log  *slog.Logger
	cfg  RelayConfig
	wake chan struct{}
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
		cfg.MaxBackoff = 5 * time.Second
	}
	return &Relay{db: db, conn: conn, log: log, cfg: cfg, wake: make(chan struct{}, 1)}
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
// flush what is left, so a clean shutdown leaves nothing behind that the
// broker could have taken.
func (r *Relay) Run(ctx context.Context) {
	backoff := time.Duration(0)
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
		n, err := r.flush(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			backoff = min(max(2*backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
			r.log.Warn("outbox relay: publish failed; retrying", "in", backoff, "err", err)
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
	}
}

func (r *Relay) finalFlush() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
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

// flush publishes one batch of the oldest unpublished rows and marks them.
// It returns how many rows it published.
func (r *Relay) flush(ctx context.Context) (int, error) {
	rows, err := r.db.Write.QueryContext(ctx, `SELECT seq, event_id, subject, payload, traceparent
		FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1`, r.cfg.Batch)
	if err != nil {
		return 0, fmt.Errorf("outbox read: %w", err)
	}
	var (
		msgs []broker.Message
		seqs []any
	)
	for rows.Next() {
		var (
			seq   int64
			m     broker.Message
			trace string
		)
		if err := rows.Scan(&seq, &m.ID, &m.Subject, &m.Data, &trace); err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox read: %w", err)
		}
		m.Header = map[string]string{"Content-Type": "application/cloudevents+json"}
		if trace != "" {
			m.Header["traceparent"] = trace
		}
		msgs = append(msgs, m)
		seqs = append(seqs, seq)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, fmt.Errorf("outbox read: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if err := r.conn.PublishBatch(ctx, msgs); err != nil {
		return 0, fmt.Errorf("outbox publish %d events: %w", len(msgs), err)
	}
	// Marking after the acks: a crash in between republishes the batch,
	// which the broker's duplicate window and the consumers' inboxes absorb.
	err = r.db.InTx(ctx, func(tx *sql.Tx) error {
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
