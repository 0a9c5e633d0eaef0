package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorycache"
	"github.com/convergehq/converge/internal/inventory/inventoryhttp"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordercache"
	"github.com/convergehq/converge/internal/order/orderhttp"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
)

// cacheEntries bounds each service's in-process cache.
const cacheEntries = 100_000

type roleConfig struct {
	db       string
	broker   string
	cacheTTL time.Duration
}

// serviceRole is a running service: its database, broker connection,
// outbox relay, event consumer and HTTP server.
type serviceRole struct {
	name   string
	addr   string // host:port of its HTTP server
	url    string
	db     *store.DB
	conn   *broker.Conn
	server *http.Server
	drain  func() // releases requests held open (GET ?wait=), if the service has any

	stopConsumer context.CancelFunc
	consumer     sync.WaitGroup
	stopRelay    context.CancelFunc
	relay        sync.WaitGroup
}

// shutdown stops taking requests, lets the consumer finish its batch, then
// lets the relay flush what the requests and that batch wrote, and closes
// the broker connection and the database last.
func (r *serviceRole) shutdown(ctx context.Context) error {
	var errs []error
	if r.server != nil {
		errs = append(errs, r.server.Shutdown(ctx))
	}
	if r.stopConsumer != nil {
		r.stopConsumer()
	}
	r.consumer.Wait()
	if r.stopRelay != nil {
		r.stopRelay()
	}
	r.relay.Wait()
	if r.conn != nil {
		r.conn.Close()
	}
	if r.db != nil {
		errs = append(errs, r.db.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// open connects a role to its database and the broker.
func openRole(ctx context.Context, name string, cfg roleConfig, log *slog.Logger) (*serviceRole, error) {
	r := &serviceRole{name: name}
	var err error
	if r.db, err = store.Open(ctx, cfg.db); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if r.conn, err = broker.Connect(ctx, cfg.broker, "converge-"+name, log); err != nil {
		_ = r.db.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return r, nil
}

// run starts the relay, the consumer and the HTTP server of a role.
func (r *serviceRole) run(bg context.Context, relay *outbox.Relay, cc broker.ConsumerConfig, apply func(context.Context, []events.Envelope) []error,
	handler http.Handler, log *slog.Logger, failed chan<- error) error {
	relayCtx, stopRelay := context.WithCancel(bg)
	consumerCtx, stopConsumer := context.WithCancel(bg)
	r.stopRelay, r.stopConsumer = stopRelay, stopConsumer
	r.relay.Go(func() { relay.Run(relayCtx) })
	r.consumer.Go(func() {
		if err := r.conn.Consume(consumerCtx, cc, eventHandler(apply, log)); err != nil {
			log.Error("consumer stopped", "err", err)
			select {
			case failed <- fmt.Errorf("%s consumer: %w", r.name, err):
			default:
			}
		}
	})
	srv, addr, err := serve("127.0.0.1:0", handler, failed)
	if err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	r.server, r.addr, r.url = srv, addr, "http://"+addr
	return nil
}

func (r *serviceRole) ready(ctx context.Context) error {
	if !r.conn.Connected() {
		return errors.New("broker unreachable")
	}
	return r.db.Ping(ctx)
}

func startOrder(ctx, bg context.Context, cfg roleConfig, log *slog.Logger, failed chan<- error) (*serviceRole, error) {
	log = log.With("role", "order")
	r, err := openRole(ctx, "order", cfg, log)
	if err != nil {
		return nil, err
	}
	st, err := ordersql.Open(ctx, r.db)
	if err != nil {
		return nil, errors.Join(err, r.shutdown(ctx))
	}
	relay := outbox.NewRelay(r.db, r.conn, log, outbox.RelayConfig{})
	svc := order.NewService(ordercache.New(st, cache.NewMemory(cacheEntries), cfg.cacheTTL, log), relay.Notify, log)
	cc := broker.ConsumerConfig{
		Stream:         events.InventoryStream,
		Durable:        order.Consumer,
		FilterSubjects: []string{events.InventorySubjects},
	}
	r.drain = svc.Drain
	if err := r.run(bg, relay, cc, svc.ApplyBatch, orderhttp.Routes(svc, health.Check(r.ready), log), log, failed); err != nil {
		return nil, errors.Join(err, r.shutdown(ctx))
	}
	return r, nil
}

func startInventory(ctx, bg context.Context, cfg roleConfig, log *slog.Logger, failed chan<- error) (*serviceRole, *inventory.Service, error) {
	log = log.With("role", "inventory")
	r, err := openRole(ctx, "inventory", cfg, log)
	if err != nil {
		return nil, nil, err
	}
	st, err := inventorysql.Open(ctx, r.db)
	if err != nil {
		return nil, nil, errors.Join(err, r.shutdown(ctx))
	}
	relay := outbox.NewRelay(r.db, r.conn, log, outbox.RelayConfig{})
	svc := inventory.NewService(inventorycache.New(st, cache.NewMemory(cacheEntries), cfg.cacheTTL, log), relay.Notify, log)
	cc := broker.ConsumerConfig{
		Stream:         events.OrdersStream,
		Durable:        inventory.Consumer,
		FilterSubjects: []string{events.OrdersSubjects},
	}
	if err := r.run(bg, relay, cc, svc.ApplyBatch, inventoryhttp.Routes(svc, health.Check(r.ready), log), log, failed); err != nil {
		return nil, nil, errors.Join(err, r.shutdown(ctx))
	}
	return r, svc, nil
}

// eventHandler adapts a service's ApplyBatch to the broker's consumer: it
// decodes each envelope, applies the batch, and marks as permanent
// (dead-letter at once) what no retry can fix: bytes that are not an event,
// and events the service does not know.
func eventHandler(apply func(context.Context, []events.Envelope) []error, log *slog.Logger) broker.BatchHandler {
	return func(ctx context.Context, ds []broker.Delivery) []error {
		errs := make([]error, len(ds))
		var (
			batch []events.Envelope
			at    []int // index in ds of each event of batch
		)
		for i, d := range ds {
			e, err := events.Decode(d.Data)
			if err != nil {
				errs[i] = err
				continue
			}
			batch = append(batch, e)
			at = append(at, i)
		}
		for j, err := range apply(ctx, batch) {
			errs[at[j]] = err
		}
		for i, err := range errs {
			if errors.Is(err, events.ErrMalformed) || errors.Is(err, events.ErrUnknown) {
				errs[i] = broker.Permanent(err)
			}
			if err != nil {
				d := ds[i]
				log.WarnContext(ctx, "event not applied", "subject", d.Subject, "seq", d.StreamSeq, "delivery", d.NumDelivered, "err", err)
			}
		}
		return errs
	}
}

// seed stores the demo catalogue a first start offers.
func seed(ctx context.Context, svc *inventory.Service) error {
	for _, c := range []struct {
		sku    string
		onHand int64
	}{
		{"A-1", 100}, {"B-2", 50}, {"C-3", 10}, {"D-4", 0}, {"E-5", 1000},
	} {
		if _, err := svc.SetStock(ctx, c.sku, c.onHand); err != nil {
			return fmt.Errorf("seed catalogue: %w", err)
		}
	}
	return nil
}
