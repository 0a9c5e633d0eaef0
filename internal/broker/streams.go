package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const defaultDuplicates = 2 * time.Minute

// StreamConfig describes a stream for EnsureStream.
type StreamConfig struct {
	Name       string
	Subjects   []string
	Replicas   int           // 0 => 1; use 3 on a three-node cluster
	Duplicates time.Duration // de-duplication window for Nats-Msg-Id; 0 => 2m (at most MaxAge)

	// Limits; 0 means unlimited. When MaxBytes or MaxMsgs is set the
	// stream refuses new messages once full (DiscardNew) rather than
	// dropping its oldest ones: a refused publish stays in the outbox and
	// is retried, while a dropped message might not have been consumed
	// yet. MaxAge does remove messages whether consumed or not, so set it
	// well above the longest outage a consumer may have.
	MaxBytes int64
	MaxMsgs  int64
	MaxAge   time.Duration
}

// streamConfig is the JetStream configuration EnsureStream maintains.
func (cfg StreamConfig) streamConfig() (jetstream.StreamConfig, error) {
	if cfg.Name == "" {
		return jetstream.StreamConfig{}, errors.New("name is required")
	}
	if cfg.Replicas < 0 || cfg.Replicas > 5 {
		return jetstream.StreamConfig{}, fmt.Errorf("replicas %d: want 1 to 5", cfg.Replicas)
	}
	if cfg.MaxBytes < 0 || cfg.MaxMsgs < 0 || cfg.MaxAge < 0 || cfg.Duplicates < 0 {
		return jetstream.StreamConfig{}, errors.New("limits must not be negative (0 = unlimited)")
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = defaultDuplicates
		// The server rejects a window longer than the messages live.
		if cfg.MaxAge > 0 && cfg.MaxAge < cfg.Duplicates {
			cfg.Duplicates = cfg.MaxAge
		}
	}
	sc := jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Replicas:   cfg.Replicas,
		Duplicates: cfg.Duplicates,
		MaxBytes:   -1, // the server's "unlimited"
		MaxMsgs:    -1,
		MaxAge:     cfg.MaxAge,
		Discard:    jetstream.DiscardOld,
		// PublishBatch sends atomic batches: a few fsyncs per batch
		// instead of one per message.
		AllowAtomicPublish: true,
	}
	if cfg.MaxBytes > 0 {
		sc.MaxBytes = cfg.MaxBytes
	}
	if cfg.MaxMsgs > 0 {
		sc.MaxMsgs = cfg.MaxMsgs
	}
	if cfg.MaxBytes > 0 || cfg.MaxMsgs > 0 {
		sc.Discard = jetstream.DiscardNew
	}
	return sc, nil
}

// EnsureStream makes the stream match cfg: it creates it if missing,
// updates it if any setting cfg controls differs, and otherwise sends
// nothing, so every service may call it at start without churning the
// cluster. Settings cfg does not control (a description, placement) are
// kept on update. Streams are file-backed with limits retention, so
// consumers of several services can read the same events independently.
func (c *Conn) EnsureStream(ctx context.Context, cfg StreamConfig) error {
	want, err := cfg.streamConfig()
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return c.ensureStream(ctx, want, true)
}

func (c *Conn) ensureStream(ctx context.Context, want jetstream.StreamConfig, mayRetry bool) error {
	st, err := c.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = c.js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && mayRetry {
			// Another instance created it meanwhile; compare with theirs.
			return c.ensureStream(ctx, want, false)
		}
		if err != nil {
			return fmt.Errorf("ensure stream %s: create: %w", want.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	have := st.CachedInfo().Config
	if streamMatches(have, want) {
		return nil
	}
	upd := have
	upd.Subjects = want.Subjects
	upd.Storage = want.Storage // cannot change; the server says so if asked
	upd.Retention = want.Retention
	upd.Replicas = want.Replicas
	upd.Duplicates = want.Duplicates
	upd.MaxBytes = want.MaxBytes
	upd.MaxMsgs = want.MaxMsgs
	upd.MaxAge = want.MaxAge
	upd.Discard = want.Discard
	upd.AllowAtomicPublish = want.AllowAtomicPublish
	if _, err := c.js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("ensure stream %s: update: %w", want.Name, err)
	}
	c.log.Info("stream updated", "stream", want.Name)
	return nil
}

// streamMatches compares the settings StreamConfig controls.
func streamMatches(have, want jetstream.StreamConfig) bool {
	return sameSet(have.Subjects, want.Subjects) &&
		have.Storage == want.Storage &&
		have.Retention == want.Retention &&
		have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates &&
		have.MaxBytes == want.MaxBytes &&
		have.MaxMsgs == want.MaxMsgs &&
		have.MaxAge == want.MaxAge &&
		have.Discard == want.Discard &&
		have.AllowAtomicPublish == want.AllowAtomicPublish
}

// sameSet compares as sets: the order of subjects does not matter.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// EnsureConsumer makes the durable consumer cfg describes exist with the
// settings Consume relies on, creating or updating it only if needed. A
// setup step runs it once so that services can Consume with BindOnly,
// needing no permission to create consumers.
func (c *Conn) EnsureConsumer(ctx context.Context, cfg ConsumerConfig) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("ensure consumer %s/%s: %w", cfg.Stream, cfg.Durable, err)
	}
	if _, err := c.ensureConsumer(ctx, cfg, true); err != nil {
		return fmt.Errorf("ensure consumer %s/%s: %w", cfg.Stream, cfg.Durable, err)
	}
	return nil
}

func (c *Conn) ensureConsumer(ctx context.Context, cfg ConsumerConfig, mayRetry bool) (jetstream.Consumer, error) {
	want := cfg.consumerConfig()
	cons, err := c.js.Consumer(ctx, cfg.Stream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = c.js.CreateConsumer(ctx, cfg.Stream, want)
		if errors.Is(err, jetstream.ErrConsumerExists) && mayRetry {
			// Another instance created it meanwhile; compare with theirs.
			return c.ensureConsumer(ctx, cfg, false)
		}
		if err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
		return cons, nil
	case err != nil:
		return nil, err
	}
	if consumerMatches(cons.CachedInfo().Config, want) {
		return cons, nil
	}
	cons, err = c.js.UpdateConsumer(ctx, cfg.Stream, want)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	c.log.Info("consumer updated", "stream", cfg.Stream, "consumer", cfg.Durable)
	return cons, nil
}

// consumerMatches compares the settings consumerConfig sets. The server
// stores a single filter subject as FilterSubject, so filters are compared
// as one set.
func consumerMatches(have, want jetstream.ConsumerConfig) bool {
	filters := func(cc jetstream.ConsumerConfig) []string {
		if cc.FilterSubject != "" {
			return append(slices.Clone(cc.FilterSubjects), cc.FilterSubject)
		}
		return cc.FilterSubjects
	}
	return have.Durable == want.Durable &&
		have.AckPolicy == want.AckPolicy &&
		have.DeliverPolicy == want.DeliverPolicy &&
		have.AckWait == want.AckWait &&
		have.MaxDeliver == want.MaxDeliver &&
		len(have.BackOff) == 0 &&
		sameSet(filters(have), filters(want))
}
