package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/convergehq/converge/internal/timeline"
	"github.com/convergehq/converge/internal/web"
)

// timelinePath is where each service serves its part of an order's
// timeline. It is not under /api/v1: the gateway does not forward it.
func timelinePath(id string) string {
	return "/internal/v1/orders/" + url.PathEscape(id) + "/timeline"
}

// timelineHandler answers GET /api/v1/orders/{id}/timeline: it asks the
// order service and the inventory service, each through its proxy (so
// with the same choice of instance, retries and errors as any request),
// for the steps its own database holds, and merges them by time. The order
// service's answer decides: an order it does not know is a 404.
func timelineHandler(orders, inventory http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			web.WriteProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		path := timelinePath(r.PathValue("id"))
		var ord, inv *recorder
		var wg sync.WaitGroup
		wg.Go(func() { ord = ask(orders, r, path) })
		wg.Go(func() { inv = ask(inventory, r, path) })
		wg.Wait()
		var a, b timeline.Timeline
		for _, part := range []struct {
			rec *recorder
			dst *timeline.Timeline
		}{{ord, &a}, {inv, &b}} {
			if part.rec.status != http.StatusOK {
				part.rec.copyTo(w) // a problem+json from the service or the proxy
				return
			}
			if err := json.Unmarshal(part.rec.body.Bytes(), part.dst); err != nil {
				web.WriteProblem(w, http.StatusBadGateway, "a service sent an invalid timeline")
				return
			}
		}
		a.Steps = timeline.Merge(a.Steps, b.Steps)
		web.WriteJSON(w, http.StatusOK, a)
	})
}

// ask sends a GET for path through proxy, on behalf of in (its context,
// request id and trace context), and keeps the answer.
func ask(proxy http.Handler, in *http.Request, path string) *recorder {
	req := in.Clone(in.Context())
	req.Method = http.MethodGet
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = path, "", ""
	req.Body, req.ContentLength, req.GetBody = http.NoBody, 0, nil
	req.Header.Del("Content-Type")
	rec := &recorder{header: http.Header{}}
	proxy.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

// recorder is an http.ResponseWriter that keeps the response in memory.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 && status >= 200 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// copyTo writes the kept response to w.
func (r *recorder) copyTo(w http.ResponseWriter) {
	for _, k := range []string{"Content-Type", "X-Content-Type-Options"} {
		if v := r.header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body.Bytes()) // the client has gone if this fails
}
