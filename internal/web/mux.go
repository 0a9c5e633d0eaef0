package web

import (
	"context"
	"fmt"
	"net/http"

	"github.com/convergehq/converge/internal/telemetry"
)

// Handler serves mux, but answers an unknown route (404) or a wrong method
// (405, with its Allow header) as problem+json instead of ServeMux's plain
// text.
func Handler(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			if r.Method != http.MethodConnect { // a CONNECT redirect's "pattern" is the path asked for
				SetRoute(r, pattern)
			}
			telemetry.SetRoute(r.Context(), pattern)
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			WriteProblem(w, rec.status, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
		case http.StatusNotFound, 0:
			NotFound(w, r)
		default:
			// A redirect ServeMux chose (a cleaned path, a trailing slash).
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
		}
	})
}

// statusRecorder keeps the status and headers ServeMux's fallback handlers
// write, and drops their plain-text bodies.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(p), nil
}
func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
}

type routeKey struct{}

// TrackRoute returns r with room for the route that a Handler further in
// matches, and a function that reads it once the request is served ("" if
// none matched). A middleware outside handlers that copy the request
// (r.WithContext) learns the route this way: ServeMux sets r.Pattern only on
// the copy it is given.
func TrackRoute(r *http.Request) (*http.Request, func() string) {
	route := new(string)
	return r.WithContext(context.WithValue(r.Context(), routeKey{}, route)), func() string { return *route }
}

// SetRoute records pattern as the route of r, for TrackRoute: a ServeMux
// pattern or another name of a fixed set, never a path a client chose.
// Handler does it for its ServeMux; a handler that routes by itself calls
// it.
func SetRoute(r *http.Request, pattern string) {
	if route, ok := r.Context().Value(routeKey{}).(*string); ok {
		*route = pattern
	}
}
