package role

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/lb"
	"github.com/convergehq/converge/internal/metrics"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/outbox"
)

// instrument serves reg's /metrics beside h and times every request of
// both.
func instrument(reg *metrics.Registry, h http.Handler, log *slog.Logger) http.Handler {
	return metrics.NewHTTP(reg).Wrap(reg.Serve(h, log))
}

// cacheKind names the cache a URL opens, for the cache metrics' label.
func cacheKind(url string) string {
	if strings.HasPrefix(url, "redis://") || strings.HasPrefix(url, "rediss://") {
		return "redis"
	}
	return "memory"
}

// serviceMetrics registers what every service reports: its outbox's
// backlog, and its consumer's progress and dead letters as the broker sees
// them. (Transactions, the cache and the relay are counted by the observers
// openService installs.)
func (s *Service) serviceMetrics(cc broker.ConsumerConfig) {
	metrics.Outbox(s.metrics, func(ctx context.Context) (int64, time.Time, error) { return outbox.Backlog(ctx, s.db) })
	metrics.Consumer(s.metrics, cc.Durable, func(ctx context.Context) (broker.ConsumerState, error) {
		return s.conn.ConsumerState(ctx, cc.Stream, cc.Durable)
	})
	metrics.DeadLetters(s.metrics, cc.Durable, func(ctx context.Context) (uint64, error) {
		return s.conn.SubjectMessages(ctx, events.DeadLetterStream, cc.DeadLetters())
	})
}

// ordersReuse is how long a count of orders by status is served again: the
// count reads the whole status index.
const ordersReuse = 15 * time.Second

// orderMetrics registers the order service's own figures: orders by status,
// and the time from an order's creation to its leaving PENDING.
func orderMetrics(reg *metrics.Registry, st *ordersql.Store, svc *order.Service) {
	metrics.Counts(reg, "converge_orders", "Orders by status (counted at most every 15 s).", "status", ordersReuse,
		func(ctx context.Context) (map[string]int64, error) {
			counts, err := st.CountByStatus(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]int64, len(counts))
			for s, n := range counts {
				out[string(s)] = n
			}
			return out, nil
		})
	final := metrics.Latency(reg, "converge_order_final_seconds",
		"Time from an order's creation to its first final status (CONFIRMED, REJECTED or CANCELLED), observed by the instance that applied it.", "status")
	svc.OnFinal(func(to order.Status, createdAt time.Time) { final(string(to), time.Since(createdAt)) })
}

// poolBackends lists the instances of pools for the backend metrics.
func poolBackends(pools map[string][]lb.BackendStatus) []metrics.Backend {
	var out []metrics.Backend
	for pool, bs := range pools {
		for _, b := range bs {
			out = append(out, metrics.Backend{Pool: pool, URL: b.URL, Up: b.Up})
		}
	}
	return out
}
