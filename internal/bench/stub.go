package bench

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/convergehq/converge/internal/order/orderhttp"
)

// Stub stands in for both services behind the gateways of the bare chain.
// It answers what the load client asks, as early as it can: an order is
// accepted (202, PENDING) and is final (CONFIRMED) the first time it is
// asked for, or at once (201) for a POST with Prefer: wait, read as the
// order service reads it; stock is set at once, and nothing is stored.
// What the chain then measures is the load balancer, the gateways and the
// client: the most the real flow could reach on the same machine.
func Stub() http.Handler {
	var seq atomic.Int64
	order := func(w http.ResponseWriter, code int, id, status string) {
		now := time.Now().UTC()
		writeJSON(w, code, map[string]any{"id": id, "status": status, "created_at": now, "updated_at": now})
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	// The load client reads a SKU's reservations before setting its stock:
	// none here.
	mux.HandleFunc("GET /api/v1/inventory/{sku}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"title": "Not Found", "status": http.StatusNotFound})
	})
	mux.HandleFunc("PUT /api/v1/inventory/{sku}", func(w http.ResponseWriter, r *http.Request) {
		drain(r)
		writeJSON(w, http.StatusOK, map[string]any{"sku": r.PathValue("sku")})
	})
	mux.HandleFunc("POST /api/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		drain(r)
		id := "stub-" + strconv.FormatInt(seq.Add(1), 10)
		if wait, err := orderhttp.PreferWait(r.Header); err == nil && wait > 0 {
			// A client that waits for the outcome has it at once, in
			// the one round trip the real flow answers it in.
			order(w, http.StatusCreated, id, "CONFIRMED")
			return
		}
		order(w, http.StatusAccepted, id, "PENDING")
	})
	mux.HandleFunc("GET /api/v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		order(w, http.StatusOK, r.PathValue("id"), "CONFIRMED")
	})
	mux.HandleFunc("POST /api/v1/orders/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		drain(r)
		order(w, http.StatusOK, r.PathValue("id"), "CANCELLED")
	})
	return mux
}

// drain reads what is left of a request's body, as a real handler decoding
// it would.
func drain(r *http.Request) { _, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v) // maps of strings and times always encode
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
