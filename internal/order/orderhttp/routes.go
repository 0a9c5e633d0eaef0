// Package orderhttp is the order service's HTTP API. routes.go is the whole
// API in one place; the gateway forwards /api/v1/orders* here.
package orderhttp

import (
	"log/slog"
	"net/http"

	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/web"
)

// Routes returns the order service's handler; ready reports whether DB A
// and the broker are reachable.
func Routes(svc *order.Service, ready health.Check, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	// web.Query names the query parameters each route takes; any other is a 400.
	mux.Handle("POST /api/v1/orders", web.Query(handlePlace(svc, log)))
	mux.Handle("GET /api/v1/orders", web.Query(handleList(svc, log), "customer_id", "status", "after", "limit"))
	mux.Handle("GET /api/v1/orders/{id}", web.Query(handleGet(svc, log), "wait"))
	mux.Handle("POST /api/v1/orders/{id}/cancel", web.Query(handleCancel(svc, log)))
	// Internal: the gateway merges it with inventory's part into
	// GET /api/v1/orders/{id}/timeline.
	mux.Handle("GET /internal/v1/orders/{id}/timeline", web.Query(handleTimeline(svc, log)))
	health.Register(mux, ready)
	return web.Handler(mux)
}

// statuses maps the domain's errors to HTTP statuses; the first match wins.
// A function rather than a variable, so that no handler can change it.
func statuses() web.Statuses {
	return web.Statuses{
		{Err: order.ErrNotFound, Status: http.StatusNotFound},
		{Err: order.ErrInvalid, Status: http.StatusBadRequest},
		{Err: order.ErrIdempotencyMismatch, Status: http.StatusUnprocessableEntity},
		{Err: order.ErrConflict, Status: http.StatusConflict},
	}
}
