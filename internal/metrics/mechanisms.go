package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/store"
)

// DB registers the figures of a database's transactions and returns the
// observer to hand to store.DB.Observe. name says whose database it is
// ("order", "inventory").
func DB(reg prometheus.Registerer, name string, engine store.Engine) func(store.TxKind, time.Duration, error) {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "converge_db_transaction_duration_seconds",
		Help:        "Time of a database transaction (InTx: write, ReadTx: read), retries after a deadlock included.",
		ConstLabels: prometheus.Labels{"db": name, "engine": string(engine)},
		Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"kind"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "converge_db_transaction_errors_total",
		Help:        "Database transactions that returned an error, rolled back (a refused state change included).",
		ConstLabels: prometheus.Labels{"db": name, "engine": string(engine)},
	}, []string{"kind"})
	reg.MustRegister(duration, errs)
	for _, k := range []store.TxKind{store.WriteTx, store.ReadOnlyTx} {
		errs.WithLabelValues(string(k)) // present at 0 from the start
	}
	return func(kind store.TxKind, took time.Duration, err error) {
		duration.WithLabelValues(string(kind)).Observe(took.Seconds())
		if err != nil {
			errs.WithLabelValues(string(kind)).Inc()
		}
	}
}

// Relay registers the outbox relay's figures and returns the observer to
// set as outbox.RelayConfig.Observe.
func Relay(reg prometheus.Registerer) func(n int, err error) {
	published := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "converge_relay_published_events_total",
		Help: "Outbox events the relay published (acknowledged by the broker).",
	})
	errs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "converge_relay_errors_total",
		Help: "Relay rounds that failed to publish or mark their batch; the batch is retried.",
	})
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "converge_relay_batch_events",
		Help:    "Events in each batch the relay published.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512
	})
	reg.MustRegister(published, errs, batch)
	return func(n int, err error) {
		if err != nil {
			errs.Inc()
			return
		}
		published.Add(float64(n))
		batch.Observe(float64(n))
	}
}

// Outbox registers the outbox's backlog, read on scrape by backlog (see
// outbox.Backlog).
func Outbox(reg prometheus.Registerer, backlog func(ctx context.Context) (int64, time.Time, error)) {
	rows := prometheus.NewDesc("converge_outbox_backlog_events", "Outbox events not yet published.", nil, nil)
	age := prometheus.NewDesc("converge_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event; 0 when there is none.", nil, nil)
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{rows, age}, read: func(ctx context.Context) ([]prometheus.Metric, error) {
		n, oldest, err := backlog(ctx)
		if err != nil {
			return nil, err
		}
		var a float64
		if !oldest.IsZero() {
			a = max(0, time.Since(oldest).Seconds())
		}
		return []prometheus.Metric{gauge(rows, float64(n)), gauge(age, a)}, nil
	}})
}

// Cache wraps c so that its lookups are counted as hits, misses or errors,
// and the failures of its other calls by call; kind says what c is
// ("memory", "redis").
func Cache(reg prometheus.Registerer, c cache.Cache, kind string) cache.Cache {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "converge_cache_lookups_total",
		Help:        "Cache lookups by result: hit, miss (then read from the database) or error.",
		ConstLabels: prometheus.Labels{"cache": kind},
	}, []string{"result"})
	writeErrs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "converge_cache_write_errors_total",
		Help: "Cache calls of the write path that failed, by op: tokens (taken before a commit; its new entries are invalidated instead), " +
			"fill (a later read misses) or invalidate (the entry it should have dropped lives until its TTL).",
		ConstLabels: prometheus.Labels{"cache": kind},
	}, []string{"op"})
	reg.MustRegister(lookups, writeErrs)
	return &countedCache{Cache: c,
		hit: lookups.WithLabelValues("hit"), miss: lookups.WithLabelValues("miss"), err: lookups.WithLabelValues("error"),
		tokensErr: writeErrs.WithLabelValues("tokens"), fillErr: writeErrs.WithLabelValues("fill"), invalidateErr: writeErrs.WithLabelValues("invalidate"),
	}
}

type countedCache struct {
	cache.Cache
	hit, miss, err                    prometheus.Counter
	tokensErr, fillErr, invalidateErr prometheus.Counter
}

func (c *countedCache) Tokens(ctx context.Context, keys ...string) ([]uint64, error) {
	tokens, err := c.Cache.Tokens(ctx, keys...)
	countErr(c.tokensErr, err)
	return tokens, err
}

func (c *countedCache) Fill(ctx context.Context, ttl time.Duration, entries ...cache.Entry) error {
	err := c.Cache.Fill(ctx, ttl, entries...)
	countErr(c.fillErr, err)
	return err
}

func (c *countedCache) Invalidate(ctx context.Context, keys ...string) error {
	err := c.Cache.Invalidate(ctx, keys...)
	countErr(c.invalidateErr, err)
	return err
}

func countErr(c prometheus.Counter, err error) {
	if err != nil {
		c.Inc()
	}
}

func (c *countedCache) Get(ctx context.Context, key string) ([]byte, bool, uint64, error) {
	val, found, token, err := c.Cache.Get(ctx, key)
	switch {
	case err != nil:
		c.err.Inc()
	case found:
		c.hit.Inc()
	default:
		c.miss.Inc()
	}
	return val, found, token, err
}

// Consumer registers a durable consumer's progress, read from the broker on
// scrape. Every instance of a service reports the same shared consumer.
func Consumer(reg prometheus.Registerer, consumer string, state func(ctx context.Context) (broker.ConsumerState, error)) {
	labels := prometheus.Labels{"consumer": consumer}
	pending := prometheus.NewDesc("converge_consumer_pending_messages", "Messages of the stream the consumer has not been sent yet (from JetStream).", nil, labels)
	ackPending := prometheus.NewDesc("converge_consumer_ack_pending_messages", "Messages sent to the consumer and not yet acknowledged (from JetStream).", nil, labels)
	redelivered := prometheus.NewDesc("converge_consumer_redelivered_messages", "Messages sent more than once and not yet acknowledged (from JetStream).", nil, labels)
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{pending, ackPending, redelivered}, read: func(ctx context.Context) ([]prometheus.Metric, error) {
		st, err := state(ctx)
		if err != nil {
			return nil, err
		}
		return []prometheus.Metric{
			gauge(pending, float64(st.Pending)),
			gauge(ackPending, float64(st.AckPending)),
			gauge(redelivered, float64(st.Redelivered)),
		}, nil
	}})
}

// DeadLetters registers how many dead letters a consumer has in the
// dead-letter stream, read from the broker on scrape.
func DeadLetters(reg prometheus.Registerer, consumer string, count func(ctx context.Context) (uint64, error)) {
	depth := prometheus.NewDesc("converge_deadletter_messages", "Messages in the dead-letter stream under the consumer's subject (dlq.<consumer>).", nil, prometheus.Labels{"consumer": consumer})
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{depth}, read: func(ctx context.Context) ([]prometheus.Metric, error) {
		n, err := count(ctx)
		if err != nil {
			return nil, err
		}
		return []prometheus.Metric{gauge(depth, float64(n))}, nil
	}})
}

// Broker registers a broker node's figures, read on scrape. node returns
// the running node, or nil while it is stopped (converge dev's embedded
// broker can be stopped and started again).
func Broker(reg prometheus.Registerer, node func() *broker.Server) {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	var (
		up          = d("converge_broker_up", "1 while the broker node runs, 0 while it is stopped.")
		conns       = d("converge_broker_connections", "Clients connected to the node.")
		inMsgs      = d("converge_broker_received_messages_total", "Messages the node received since it started.")
		outMsgs     = d("converge_broker_sent_messages_total", "Messages the node sent since it started.")
		inBytes     = d("converge_broker_received_bytes_total", "Bytes the node received since it started.")
		outBytes    = d("converge_broker_sent_bytes_total", "Bytes the node sent since it started.")
		streams     = d("converge_broker_streams", "JetStream streams (replicas) on the node.")
		consumers   = d("converge_broker_consumers", "JetStream consumers (replicas) on the node.")
		storedMsgs  = d("converge_broker_stored_messages", "Messages in the node's streams.")
		storedBytes = d("converge_broker_stored_bytes", "Bytes in the node's streams.")
	)
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{up, conns, inMsgs, outMsgs, inBytes, outBytes, streams, consumers, storedMsgs, storedBytes},
		read: func(context.Context) ([]prometheus.Metric, error) {
			srv := node()
			if srv == nil {
				return []prometheus.Metric{gauge(up, 0)}, nil
			}
			st, err := srv.Stats()
			if err != nil {
				return nil, err
			}
			return []prometheus.Metric{
				gauge(up, 1),
				gauge(conns, float64(st.Connections)),
				counter(inMsgs, float64(st.InMsgs)),
				counter(outMsgs, float64(st.OutMsgs)),
				counter(inBytes, float64(st.InBytes)),
				counter(outBytes, float64(st.OutBytes)),
				gauge(streams, float64(st.Streams)),
				gauge(consumers, float64(st.Consumers)),
				gauge(storedMsgs, float64(st.Messages)),
				gauge(storedBytes, float64(st.Bytes)),
			}, nil
		}})
}

// Backend is one instance a load balancer or gateway pool may send
// requests to.
type Backend struct {
	Pool string // "gateway", "order", "inventory"
	URL  string
	Up   bool // in rotation
}

// Backends registers which backends are in rotation, read on scrape.
func Backends(reg prometheus.Registerer, list func() []Backend) {
	up := prometheus.NewDesc("converge_backend_up", "1 while the backend is in rotation, 0 while health checks keep it out.", []string{"pool", "backend"}, nil)
	reg.MustRegister(&onScrape{descs: []*prometheus.Desc{up}, read: func(context.Context) ([]prometheus.Metric, error) {
		var ms []prometheus.Metric
		for _, b := range list() {
			v := 0.0
			if b.Up {
				v = 1
			}
			ms = append(ms, gauge(up, v, b.Pool, b.URL))
		}
		return ms, nil
	}})
}
