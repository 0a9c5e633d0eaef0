package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/gateway"
	"github.com/convergehq/converge/internal/ui"
	"github.com/convergehq/converge/internal/web"
)

// The live page of the whole cluster. Each gateway process serves a page
// of what it knows; this process, the one that started every process and
// can stop and start them, serves the complete one: every process, with
// the stop and start buttons. The page calls the public API of the origin
// it came from, so /api/ is forwarded to the load balancer, and its orders
// take the path any client's take.

// pageServer serves the live page on Config.UIAddr.
type pageServer struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// uiComponents lists every process for the live page, by the names Stop
// and Restart take; all but the load balancer, through which the page's
// orders go, can be stopped and started from it.
func (c *Cluster) uiComponents() []ui.Component {
	out := make([]ui.Component, 0, len(c.procs))
	for _, p := range c.procs {
		out = append(out, ui.Component{Name: p.Name, Role: p.Role, URL: strings.TrimSuffix(p.Metrics, "/metrics"), Control: p.Role != "lb"})
	}
	return out
}

// servePage serves the live page on ln, once every process is up: the
// page itself, its state and buttons behind the gateways' own key checks,
// and /api/ forwarded to the load balancer. A server that stops by itself
// is reported on Failed.
func (c *Cluster) servePage(ln net.Listener) error {
	page, err := ui.New(ui.Config{Components: c.uiComponents, Control: c}, c.log.With("part", "ui"))
	if err != nil {
		return err
	}
	keys, err := gateway.NewKeys(c.cfg.APIKey, c.cfg.AdminKey)
	if err != nil {
		return fmt.Errorf("live page: %w", err)
	}
	lb, err := url.Parse(c.LBURL)
	if err != nil {
		return fmt.Errorf("live page: %w", err)
	}
	api := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(lb)
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the tab went away
			}
			c.log.Warn("live page: the load balancer did not answer", "path", r.URL.Path, "err", err)
			web.WriteProblem(w, http.StatusBadGateway, "the load balancer did not answer")
		},
	}
	mux := http.NewServeMux()
	keys.HandleUI(mux, page)
	mux.Handle("/api/", api) // the load balancer's gateways check the keys
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))

	ps := &pageServer{
		srv:  &http.Server{Handler: web.Handler(mux), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute},
		done: make(chan struct{}),
	}
	c.page, c.UIURL = ps, "http://"+ln.Addr().String()
	go func() {
		defer close(ps.done)
		if err := ps.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case c.failed <- fmt.Errorf("the live page's server stopped: %w", err):
			default:
			}
		}
	}()
	return nil
}

// shutdown stops serving the page, letting a stop or start it is carrying
// out finish within ctx.
func (s *pageServer) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	if err != nil {
		return fmt.Errorf("live page: %w", err)
	}
	return nil
}
