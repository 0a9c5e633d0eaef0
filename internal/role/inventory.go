package role

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/inventory/inventorycache"
	"github.com/convergehq/converge/internal/inventory/inventoryevents"
	"github.com/convergehq/converge/internal/inventory/inventoryhttp"
	"github.com/convergehq/converge/internal/inventory/inventorysql"
	"github.com/convergehq/converge/internal/telemetry"
)

// InventoryConfig configures `converge inventory`.
type InventoryConfig struct {
	ServiceConfig
	Seed bool // seed the demo catalogue when there is no stock at all
}

// Register adds the role's flags to fs, with their defaults.
func (c *InventoryConfig) Register(fs *flag.FlagSet) {
	c.register(fs, "inventory", "127.0.0.1:8082", "inventory-db", "sqlite:./converge-data/inventory.db")
	fs.BoolVar(&c.Seed, "seed", false, "seed a demo catalogue (A-1 ... E-5) when the catalogue is empty")
}

// StartInventory starts an instance of the inventory service: DB B
// (migrated), cache B, the outbox relay, the consumer of the order
// service's events, and the HTTP API.
func StartInventory(ctx context.Context, cfg InventoryConfig, log *slog.Logger) (*Service, error) {
	log = telemetry.Logger(log).With("role", "inventory")
	s, err := openService(ctx, "inventory", cfg.ServiceConfig, log)
	if err != nil {
		return nil, err
	}
	st, err := inventorysql.Open(ctx, s.db)
	if err != nil {
		return nil, failStart(ctx, s, err)
	}
	s.prune = append(s.prune, s.streamPruner(events.InventoryStream))
	cached := inventorycache.New(st, s.cache, cfg.CacheTTL, log)
	cached.Trace(cfg.Tracing.Tracer("inventory"))
	svc := inventory.NewService(cached, s.notify, log)
	if cfg.Seed {
		if err := seed(ctx, svc); err != nil {
			return nil, failStart(ctx, s, err)
		}
	}
	s.run(bindOnly(inventoryevents.Consumer()), inventoryevents.Handler(svc, cfg.Tracing, log), inventoryhttp.Routes(svc, health.Check(s.ready), log))
	return s, nil
}

// seed stores the demo catalogue if there is no stock yet. Instances that
// start together may both seed: setting stock is idempotent.
func seed(ctx context.Context, svc *inventory.Service) error {
	page, err := svc.List(ctx, "", 1)
	if err != nil {
		return fmt.Errorf("seed catalogue: %w", err)
	}
	if len(page.Items) > 0 {
		return nil
	}
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

// failStart closes a service that failed to start and returns err with
// whatever closing it failed on.
func failStart(ctx context.Context, s *Service, err error) error {
	return errors.Join(fmt.Errorf("%s: %w", s.name, err), s.Shutdown(context.WithoutCancel(ctx)))
}
