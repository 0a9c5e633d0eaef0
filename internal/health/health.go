// Package health serves the liveness and readiness endpoints every role
// exposes: /healthz says the process answers, /readyz says its dependencies
// (database, broker) do too.
package health

import (
	"context"
	"net/http"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// Check returns nil when the role can do its work.
type Check func(ctx context.Context) error

// Register adds GET /healthz and GET /readyz to mux.
func Register(mux *http.ServeMux, ready Check) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			web.WriteProblem(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}
