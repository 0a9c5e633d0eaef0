// Package inventoryhttp is the inventory service's HTTP API. routes.go is
// the whole API in one place; the gateway forwards /api/v1/inventory* here.
package inventoryhttp

import (
	"log/slog"
	"net/http"

	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/timeline"
	"github.com/convergehq/converge/internal/web"
)

// Routes returns the inventory service's handler; ready reports whether DB B
// and the broker are reachable.
func Routes(svc *inventory.Service, ready health.Check, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	// web.Query names the query parameters each route takes; any other is a 400.
	mux.Handle("PUT /api/v1/inventory/{sku}", web.Query(handleSet(svc, log)))
	mux.Handle("GET /api/v1/inventory/{sku}", web.Query(handleGet(svc, log)))
	mux.Handle("GET /api/v1/inventory", web.Query(handleList(svc, log), "after", "limit"))
	// Internal: the gateway merges it with the order service's part into
	// GET /api/v1/orders/{id}/timeline.
	mux.Handle("GET /internal/v1/orders/{id}/timeline", web.Query(handleTimeline(svc, log)))
	health.Register(mux, ready)
	return web.Handler(mux)
}

// statuses maps the domain's errors to HTTP statuses; the first match wins.
// A function rather than a variable, so that no handler can change it.
func statuses() web.Statuses {
	return web.Statuses{
		{Err: inventory.ErrNotFound, Status: http.StatusNotFound},
		{Err: inventory.ErrInvalid, Status: http.StatusBadRequest},
		{Err: inventory.ErrConflict, Status: http.StatusConflict},
	}
}

// setRequest is the body of PUT /api/v1/inventory/{sku}. A pointer tells a
// missing on_hand from a zero one.
type setRequest struct {
	OnHand *int64 `json:"on_hand"`
}

func handleSet(svc *inventory.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req setRequest
		if err := web.Decode(w, r, &req); err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		if req.OnHand == nil {
			web.WriteProblem(w, http.StatusBadRequest, "on_hand is required")
			return
		}
		it, err := svc.SetStock(r.Context(), r.PathValue("sku"), *req.OnHand)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, it)
	})
}

func handleGet(svc *inventory.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		it, err := svc.Get(r.Context(), r.PathValue("sku"))
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, it)
	})
}

func handleList(svc *inventory.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit, err := web.QueryLimit(r, inventory.MaxLimit)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		page, err := svc.List(r.Context(), r.URL.Query().Get("after"), limit)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, page)
	})
}

func handleTimeline(svc *inventory.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		steps, err := svc.Timeline(r.Context(), r.PathValue("id"))
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, timeline.Timeline{OrderID: r.PathValue("id"), Steps: steps})
	})
}
