package role

import (
	"context"
	"flag"
	"log/slog"
	"strings"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordercache"
	"github.com/convergehq/converge/internal/order/orderevents"
	"github.com/convergehq/converge/internal/order/orderhttp"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/telemetry"
)

// OrderConfig configures `converge order`.
type OrderConfig struct {
	ServiceConfig
}

// Register adds the role's flags to fs, with their defaults.
func (c *OrderConfig) Register(fs *flag.FlagSet) {
	c.register(fs, "order", "127.0.0.1:8081", "order-db", "sqlite:./converge-data/order.db")
}

// orderChanged is the plain NATS subject on which order instances tell each
// other which orders they changed.
const orderChanged = "converge.signal.order.changed"

// StartOrder starts an instance of the order service: DB A (migrated),
// cache A, the outbox relay, the consumer of inventory's replies, and the
// HTTP API.
func StartOrder(ctx context.Context, cfg OrderConfig, log *slog.Logger) (*Service, error) {
	log = telemetry.Logger(log).With("role", "order")
	s, err := openService(ctx, "order", cfg.ServiceConfig, log)
	if err != nil {
		return nil, err
	}
	st, err := ordersql.Open(ctx, s.db)
	if err != nil {
		return nil, failStart(ctx, s, err)
	}
	s.prune = append(s.prune, pruner{what: "idempotency keys", retention: ordersql.IdempotencyRetention, prune: st.PruneIdempotencyKeys}, s.streamPruner(events.OrdersStream))
	cached := ordercache.New(st, s.cache, cfg.CacheTTL, log)
	cached.Trace(cfg.Tracing.Tracer("order"))
	svc := order.NewService(cached, s.notify, log)
	s.drain = svc.Drain
	orderMetrics(s.metrics, st, svc)
	// A GET ?wait= held here wakes when any instance changes its order.
	svc.OnChange(func(ids []string) {
		if err := s.conn.Signal(orderChanged, []byte(strings.Join(ids, " "))); err != nil {
			log.Debug("order change not signalled; waits poll instead", "err", err)
		}
	})
	unsubscribe, err := s.conn.OnSignal(orderChanged, func(data []byte) { svc.Wake(strings.Fields(string(data))...) })
	if err != nil {
		return nil, failStart(ctx, s, err)
	}
	s.onShutdown = func() { _ = unsubscribe() } // the connection's drain ends it anyway
	s.run(bindOnly(orderevents.Consumer()), orderevents.Handler(svc, cfg.Tracing, log), orderhttp.Routes(svc, health.Check(s.ready), log))
	return s, nil
}
