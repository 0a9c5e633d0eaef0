// Package ui serves the live page of converge's architecture at /ui/: the
// diagram of every part (load balancer, gateways, order and inventory
// instances, their databases and caches, the broker nodes) with each
// part's health and figures, read from the parts' own /readyz and /metrics
// while the page is open; a form that places orders through the API and
// follows them; the dead letters; and, in `converge dev`, buttons that
// stop and start the parts. The page is plain HTML, CSS and JavaScript
// embedded in the binary; it calls the public API (/api/v1/...) of the
// origin it came from, and this package's own two endpoints.
package ui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/convergehq/converge/internal/web"
)

// Component is one part of the system the page shows.
type Component struct {
	Name string // unique: "lb", "gateway-1", "order-1", "broker", "broker-2"
	Role string // lb, gateway, order, inventory or broker
	// URL is the base URL of the part's /metrics and /readyz.
	URL string
	// Control says the page may stop and start it (through Config.Control).
	Control bool
}

// Control stops and starts parts of a running system by name: the
// embedded system.System and the processes of cluster.Cluster.
type Control interface {
	// Stop stops the part and returns when it is stopped.
	Stop(ctx context.Context, name string) error
	// Restart starts a stopped part again.
	Restart(name string) error
}

// Config is what the page is told.
type Config struct {
	// Components lists the parts to show; it is called for every state
	// request, so a list that is complete only once the system has
	// started can be given before.
	Components func() []Component
	// Control, if set, serves the stop and start buttons of the parts
	// whose Control is true.
	Control Control
}

// probeTimeout bounds each part's answer to one state request: a part
// that has not answered by then is shown down.
const probeTimeout = 1500 * time.Millisecond

// figuresTimeout bounds the wait for a part's /metrics within a probe:
// with the page polling every 500 ms, a part that goes down is shown so
// within about a second and a half.
const figuresTimeout = 700 * time.Millisecond

// controlTimeout bounds a stop (a service flushes its outbox, 5 s at most).
const controlTimeout = 30 * time.Second

//go:embed static
var static embed.FS

// Handler serves the page and its endpoints under /ui/.
//
// It checks no key: whoever serves it does (gateway.Keys.HandleUI asks
// for the API key at /ui/api/ and the admin key at /ui/api/control, as for
// the API), a gateway or, in the cluster topology, dev's own process.
type Handler struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
	mux    http.Handler
}

// New builds the page's handler.
func New(cfg Config, log *slog.Logger) (*Handler, error) {
	if cfg.Components == nil {
		return nil, errors.New("ui: no components")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		cfg:    cfg,
		client: &http.Client{Timeout: probeTimeout},
		log:    log,
	}
	h.mux = h.routes()
	return h, nil
}

// routes is the page's whole URL space.
func (h *Handler) routes() http.Handler {
	files, _ := fs.Sub(static, "static") // the embedded tree has it
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", web.Query(http.StripPrefix("/ui/", http.FileServerFS(files))))
	mux.Handle("GET /ui/api/state", web.Query(http.HandlerFunc(h.state)))
	mux.Handle("POST /ui/api/control", web.Query(http.HandlerFunc(h.control)))
	return web.Handler(mux)
}

// ServeHTTP serves one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// State is what GET /ui/api/state answers: every part as it is now.
type State struct {
	At         time.Time `json:"at"`
	Controls   bool      `json:"controls"` // the page may stop and start parts
	Components []Part    `json:"components"`
}

// state asks every part at once and answers when all have answered or
// timed out.
func (h *Handler) state(w http.ResponseWriter, r *http.Request) {
	comps := h.cfg.Components()
	parts := make([]Part, len(comps))
	var wg sync.WaitGroup
	for i, c := range comps {
		wg.Go(func() { parts[i] = h.probe(r.Context(), c) })
	}
	wg.Wait()
	for i := range parts {
		parts[i].Control = h.cfg.Control != nil && comps[i].Control
	}
	w.Header().Set("Cache-Control", "no-store")
	web.WriteJSON(w, http.StatusOK, State{At: time.Now().UTC(), Controls: h.cfg.Control != nil, Components: parts})
}

// controlRequest is the body of POST /ui/api/control.
type controlRequest struct {
	Action    string `json:"action"` // stop or start
	Component string `json:"component"`
}

func (h *Handler) control(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Control == nil {
		web.WriteProblem(w, http.StatusNotFound, "this page has no controls: only converge dev stops and starts parts")
		return
	}
	var req controlRequest
	if err := web.Decode(w, r, &req); err != nil {
		web.Error(w, r, h.log, nil, err)
		return
	}
	if !slices.ContainsFunc(h.cfg.Components(), func(c Component) bool { return c.Name == req.Component && c.Control }) {
		web.WriteProblem(w, http.StatusNotFound, fmt.Sprintf("no part %q can be stopped or started here", req.Component))
		return
	}
	// A tab closed halfway does not cut a stop short (a service flushing
	// its outbox, say).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), controlTimeout)
	defer cancel()
	var err error
	switch req.Action {
	case "stop":
		err = h.cfg.Control.Stop(ctx, req.Component)
	case "start":
		err = h.cfg.Control.Restart(req.Component)
	default:
		web.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("action must be stop or start, got %q", req.Action))
		return
	}
	if err != nil {
		h.log.Warn("ui control failed", "action", req.Action, "component", req.Component, "err", err)
		web.WriteProblem(w, http.StatusConflict, fmt.Sprintf("%s %s: %v", req.Action, req.Component, err))
		return
	}
	h.log.Info("ui control", "action", req.Action, "component", req.Component)
	web.WriteJSON(w, http.StatusOK, req)
}
