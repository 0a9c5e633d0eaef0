package gateway

import (
	"net/http"

	"github.com/convergehq/converge/internal/web"
)

// routes is the gateway's whole URL space. The API routes take every method:
// the services know which they allow and answer 405 themselves.
//
// The admin API (dead letters) needs a broker connection, which the
// services have and the gateway does not: both services serve it, and the
// gateway sends it to the order service's instances, behind its own key.
//
// The live page (/ui/), when there is one, is served beside the API, so
// that its calls of the API are of its own origin.
func (g *Gateway) routes(orders, inventory, ui http.Handler) http.Handler {
	toOrders := g.keys.RequireKey(limitBody(orders))
	toInventory := g.keys.RequireKey(limitBody(inventory))

	mux := http.NewServeMux()
	mux.Handle("/api/v1/orders", toOrders)
	mux.Handle("/api/v1/orders/", toOrders)
	// Composed here from both services' records; see timelineHandler.
	mux.Handle("/api/v1/orders/{id}/timeline", g.keys.RequireKey(web.Query(timelineHandler(orders, inventory))))
	mux.Handle("/api/v1/inventory", toInventory)
	mux.Handle("/api/v1/inventory/", toInventory)
	mux.Handle("/api/v1/admin/", g.keys.RequireAdminKey(limitBody(orders)))
	if ui != nil {
		g.keys.HandleUI(mux, ui)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	// The gateway holds no state, so it is ready as soon as it is alive.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return withRequestID(web.Handler(mux))
}
