package role

import (
	"context"
	"flag"
	"log/slog"

	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordercache"
	"github.com/convergehq/converge/internal/order/orderevents"
	"github.com/convergehq/converge/internal/order/orderhttp"
	"github.com/convergehq/converge/internal/order/ordersql"
)

// OrderConfig configures `converge order`.
type OrderConfig struct {
	ServiceConfig
}

// Register adds the role's flags to fs, with their defaults.
func (c *OrderConfig) Register(fs *flag.FlagSet) {
	c.register(fs, "order", "127.0.0.1:8081", "order-db", "sqlite:./converge-data/order.db")
}

// StartOrder starts an instance of the order service: DB A (migrated),
// cache A, the outbox relay, the consumer of inventory's replies, and the
// HTTP API.
func StartOrder(ctx context.Context, cfg OrderConfig, log *slog.Logger) (*Service, error) {
	log = log.With("role", "order")
	s, err := openService(ctx, "order", cfg.ServiceConfig, log)
	if err != nil {
		return nil, err
	}
	st, err := ordersql.Open(ctx, s.db)
	if err != nil {
		return nil, failStart(ctx, s, err)
	}
	svc := order.NewService(ordercache.New(st, s.cache, cfg.CacheTTL, log), s.relay.Notify, log)
	s.drain = svc.Drain
	s.run(orderevents.Consumer(), orderevents.Handler(svc, log), orderhttp.Routes(svc, health.Check(s.ready), log))
	return s, nil
}
