package role

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/dlq/dlqhttp"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/metrics"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/telemetry"
)

// ServiceConfig is what the order and the inventory service are both told.
type ServiceConfig struct {
	Addr        string        // HTTP listen address
	DB          string        // sqlite:PATH or postgres://...
	Cache       string        // memory or redis://host:port/N
	CachePrefix string        // prefix of this deployment's keys in a shared Redis
	CacheTTL    time.Duration // the longest a cached read may live
	NATS        NATS
	Instance    string        // this process's name: logs, the outbox lease, the broker's client list
	RelayLease  time.Duration // how long the outbox relay may publish after renewing its lease
	AccessLog   bool          // log a line per HTTP request at info
	Tracing     telemetry.Tracing
	// MaxDeliver and RetryBackoff are the consumer's retry schedule: how
	// many deliveries a failing event gets, and the delay before each
	// redelivery (the last repeated), before it is dead-lettered. Zero
	// values take the broker's defaults.
	MaxDeliver   int
	RetryBackoff Durations
}

// cacheEntries bounds an in-process cache.
const cacheEntries = 100_000

func (c *ServiceConfig) register(fs *flag.FlagSet, name, addr, dbFlag, db string) {
	fs.StringVar(&c.Addr, "addr", addr, "HTTP listen address of the "+name+" service")
	fs.StringVar(&c.DB, dbFlag, db, "database of the "+name+" service: sqlite:PATH or postgres://user:pass@host:5432/db")
	fs.StringVar(&c.Cache, "cache", "memory", "cache: memory (in-process) or redis://host:6379/N")
	fs.StringVar(&c.CachePrefix, "cache-prefix", "converge:", "prefix of this deployment's keys in a shared Redis")
	fs.DurationVar(&c.CacheTTL, "cache-ttl", 5*time.Second, "the longest a cached read may live")
	c.NATS.register(fs, "nats://127.0.0.1:4222")
	fs.StringVar(&c.Instance, "instance", "", "name of this instance (default: "+name+"-HOST-PID)")
	fs.IntVar(&c.MaxDeliver, "max-deliver", broker.DefaultMaxDeliver, "deliveries an event gets before it is dead-lettered (with --retry-backoff: how long a failing dependency may stay down before events go to the DLQ stream)")
	c.RetryBackoff = broker.DefaultBackoff()
	fs.Var(&c.RetryBackoff, "retry-backoff", "comma-separated delays before each redelivery of an event that failed, the last repeated")
	fs.DurationVar(&c.RelayLease, "relay-lease", 5*time.Second, "how long an outbox relay may publish after renewing its lease; another instance takes over within this after it dies")
	registerAccessLog(fs, &c.AccessLog)
}

// registerAccessLog adds the flag every role with an HTTP server has.
func registerAccessLog(fs *flag.FlagSet, on *bool) {
	fs.BoolVar(on, "access-log", true, "log a line per HTTP request at info level (method, route, status, duration, request and trace ids)")
}

// Validate checks c before anything is opened or written.
func (c ServiceConfig) Validate() error {
	if c.Addr == "" {
		return errors.New("the HTTP address is empty")
	}
	if _, err := store.ParseURL(c.DB); err != nil {
		return err
	}
	if c.Cache == "" {
		return errors.New("cache: empty; want memory or redis://host:port/N")
	}
	if err := cache.ParseURL(c.Cache); err != nil {
		return err
	}
	if c.CacheTTL <= 0 {
		return fmt.Errorf("cache TTL must be positive, got %s", c.CacheTTL)
	}
	if c.MaxDeliver < 0 {
		return fmt.Errorf("max deliver must be at least 1 (0: the default), got %d", c.MaxDeliver)
	}
	if c.RelayLease < 100*time.Millisecond {
		return fmt.Errorf("relay lease must be at least 100ms, got %s", c.RelayLease)
	}
	return c.NATS.Validate()
}

// Service is a running order or inventory service: its database, cache,
// broker connection, outbox relay, event consumer and HTTP server.
type Service struct {
	name       string
	log        *slog.Logger
	tracing    telemetry.Tracing
	accessLog  bool
	http       *server
	db         *store.DB
	cache      cache.Cache
	closeCache io.Closer
	conn       *broker.Conn
	// The consumer's retry schedule, from the config.
	maxDeliver  int
	backoff     []time.Duration
	relay       *outbox.Relay
	metrics     *metrics.Registry // served at /metrics
	drain       func()            // releases requests held open (GET ?wait=), if the service has any
	notify      func()            // wakes the relay that holds the lease, wherever it runs
	stopSignals func() error      // ends the subscription to outbox signals
	// onShutdown, if set, runs once the service takes no more requests.
	onShutdown func()
	failed     chan error

	// prune lists what the janitor deletes on a schedule, each with its
	// retention: published outbox rows, inbox rows, and whatever the
	// service adds (the order service: idempotency keys).
	prune []pruner

	stopConsumer context.CancelFunc
	consumer     sync.WaitGroup
	stopRelay    context.CancelFunc
	relays       sync.WaitGroup
}

// openService binds the HTTP address, opens the database and the cache and
// connects to the broker. On error it closes what it opened.
func openService(ctx context.Context, name string, cfg ServiceConfig, log *slog.Logger) (_ *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if cfg.Instance == "" {
		cfg.Instance = defaultInstance(name)
	}
	log = telemetry.Logger(log)
	s := &Service{name: name, log: log, tracing: cfg.Tracing, accessLog: cfg.AccessLog, failed: make(chan error, 4), metrics: metrics.New(name),
		maxDeliver: cfg.MaxDeliver, backoff: cfg.RetryBackoff}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("%s: %w", name, err), s.Shutdown(context.WithoutCancel(ctx)))
		}
	}()
	if s.http, err = listen(cfg.Addr); err != nil {
		return nil, err
	}
	if s.db, err = store.Open(ctx, cfg.DB); err != nil {
		return nil, err
	}
	s.db.Observe(metrics.DB(s.metrics, name, s.db.Engine()))
	if s.cache, s.closeCache, err = cache.Open(ctx, cfg.Cache, cfg.CachePrefix+name+":", cacheEntries); err != nil {
		return nil, err
	}
	s.cache = metrics.Cache(s.metrics, s.cache, cacheKind(cfg.Cache))
	if s.conn, err = cfg.NATS.connect(ctx, "converge-"+cfg.Instance, log); err != nil {
		return nil, err
	}
	// The lease names the process, not only the instance: two processes
	// given the same --instance must not both hold it.
	holder := cfg.Instance + "-" + strings.ToLower(rand.Text()[:6])
	s.relay = outbox.NewRelay(s.db, s.conn, log, outbox.RelayConfig{Lease: cfg.RelayLease, Holder: holder, Observe: metrics.Relay(s.metrics), Name: name, Tracing: cfg.Tracing})
	s.prune = []pruner{
		{what: "published outbox rows", retention: outbox.Retention, prune: func(ctx context.Context, before time.Time) (int64, error) { return outbox.Prune(ctx, s.db, before) }},
		{what: "inbox rows", retention: inbox.Retention, prune: func(ctx context.Context, before time.Time) (int64, error) { return inbox.Prune(ctx, s.db, before) }},
	}
	// The relay that holds the lease may run in another instance: tell
	// them all that the outbox has rows. A lost signal costs one poll.
	subject := "converge.signal.outbox." + name
	if s.stopSignals, err = s.conn.OnSignal(subject, func([]byte) { s.relay.Notify() }); err != nil {
		return nil, err
	}
	s.notify = func() {
		s.relay.Notify()
		if err := s.conn.Signal(subject, nil); err != nil {
			log.Debug("outbox signal not sent; the lease holder polls", "err", err)
		}
	}
	return s, nil
}

// run starts the relay, the consumer and the HTTP server.
func (s *Service) run(cc broker.ConsumerConfig, h broker.BatchHandler, api http.Handler) {
	cc.MaxDeliver, cc.Backoff = s.maxDeliver, s.backoff
	bg := context.Background() // each loop is stopped in Shutdown, in order
	relayCtx, stopRelay := context.WithCancel(bg)
	consumerCtx, stopConsumer := context.WithCancel(bg)
	s.stopRelay, s.stopConsumer = stopRelay, stopConsumer
	s.relays.Go(func() { s.relay.Run(relayCtx) })
	s.relays.Go(func() { s.janitor(relayCtx) })
	s.consumer.Go(func() {
		if err := s.conn.Consume(consumerCtx, cc, h); err != nil {
			s.log.Error("consumer stopped", "err", err)
			select {
			case s.failed <- fmt.Errorf("%s consumer: %w", s.name, err):
			default:
			}
		}
	})
	s.serviceMetrics(cc)
	api = withAdmin(api, dlqhttp.Routes(dlq.New(s.conn.JetStream(), events.DeadLetterStream), s.log))
	s.http.serve(telemetry.Handler(telemetry.HTTPConfig{Role: s.name, Tracing: s.tracing, Log: s.log, AccessLog: s.accessLog}, instrument(s.metrics, api, s.log)), s.failed)
}

// withAdmin serves the admin API (dead letters) beside a service's own:
// it needs a broker connection, which every service has. The gateway
// checks the admin key and sends it to the order service's instances.
func withAdmin(api, admin http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(dlqhttp.Prefix, admin)
	mux.Handle("/", api)
	return mux
}

// ready is the service's readiness: it can serve its own requests when its
// database answers. A broker outage does not make it unready: orders are
// still taken into the outbox.
func (s *Service) ready(ctx context.Context) error { return s.db.Ping(ctx) }

// URL is the base URL of the service's HTTP API.
func (s *Service) URL() string { return "http://" + s.http.Addr() }

// Failed reports a part that stopped by itself.
func (s *Service) Failed() <-chan error { return s.failed }

// Drain answers requests held open (GET ?wait=) with their current state,
// now and from now on, so that a shutdown in front of the service (a load
// balancer's, a gateway's) need not wait for them.
func (s *Service) Drain() {
	if s.drain != nil {
		s.drain()
	}
}

// Shutdown answers held requests at once, stops taking requests, lets the
// consumer finish its batch, then lets the relay flush what the requests
// and that batch wrote, and closes the broker connection, the cache and
// the database last.
func (s *Service) Shutdown(ctx context.Context) error {
	s.Drain()
	var errs []error
	errs = append(errs, s.http.shutdown(ctx))
	if s.onShutdown != nil {
		s.onShutdown()
	}
	if s.stopSignals != nil {
		_ = s.stopSignals() // the connection's drain below ends it anyway
	}
	if s.stopConsumer != nil {
		s.stopConsumer()
	}
	s.consumer.Wait()
	if s.stopRelay != nil {
		s.stopRelay()
	}
	s.relays.Wait()
	if s.conn != nil {
		s.conn.Close()
	}
	if s.closeCache != nil {
		errs = append(errs, s.closeCache.Close())
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// Durations is a flag of comma-separated durations.
type Durations []time.Duration

func (d *Durations) String() string {
	if d == nil {
		return ""
	}
	s := make([]string, len(*d))
	for i, v := range *d {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// Set parses "100ms,500ms,2s"; every delay must be positive.
func (d *Durations) Set(s string) error {
	var out Durations
	for _, part := range strings.Split(s, ",") {
		v, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || v <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 500ms or 2s", strings.TrimSpace(part))
		}
		out = append(out, v)
	}
	*d = out
	return nil
}

// bindOnly makes a service bind to its durable consumer, which Setup
// created, instead of creating it as a side effect of starting.
func bindOnly(cc broker.ConsumerConfig) broker.ConsumerConfig {
	cc.BindOnly = true
	return cc
}

// pruner deletes what is older than its retention.
type pruner struct {
	what      string
	retention time.Duration
	prune     func(ctx context.Context, before time.Time) (int64, error)
	every     time.Duration // 0: tableEvery
}

// tableEvery is how often the database tables are pruned: each prune scans
// what it deletes from, so not every minute.
const tableEvery = 10 * time.Minute

// streamPruner removes from the service's own stream what every consumer
// has acknowledged.
func (s *Service) streamPruner(stream string) pruner {
	return pruner{what: "consumed messages of stream " + stream, every: time.Minute, prune: func(ctx context.Context, _ time.Time) (int64, error) {
		n, err := s.conn.PruneConsumed(ctx, stream)
		return int64(n), err
	}}
}

// pruneEvery is how often the janitor looks: often enough that a stream,
// pruned every minute of what was consumed, stays far below its size bound
// under full load. Every instance runs it: the deletes are idempotent, so
// instances that overlap only repeat work.
const pruneEvery = time.Minute

// janitor keeps the tables that grow with traffic bounded, until ctx ends.
func (s *Service) janitor(ctx context.Context) {
	t := time.NewTimer(time.Minute) // not in the way of a start
	defer t.Stop()
	last := make([]time.Time, len(s.prune))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, p := range s.prune {
			every := p.every
			if every == 0 {
				every = tableEvery
			}
			if time.Since(last[i]) < every {
				continue
			}
			last[i] = time.Now()
			n, err := p.prune(ctx, time.Now().Add(-p.retention))
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("prune failed; trying again later", "what", p.what, "err", err)
			case n > 0:
				s.log.Info("pruned", "what", p.what, "rows", n, "older_than", p.retention)
			}
		}
		t.Reset(pruneEvery)
	}
}
